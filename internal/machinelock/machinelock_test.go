package machinelock

import (
	"fmt"
	"os"
	"testing"
)

func TestTryLock(t *testing.T) {
	t.Parallel()
	name := fmt.Sprintf("openstack-vm-exporter-machinelock-test-%d", os.Getpid())
	held, err := TryLock(name)
	if err != nil {
		t.Fatal(err)
	}
	if Supported {
		if again, err := TryLock(name); err == nil {
			again.Close()
			t.Fatal("a held lock was taken again")
		}
	}
	if err := held.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := TryLock(name)
	if err != nil {
		t.Fatalf("a released lock stays held: %v", err)
	}
	again.Close()
}
