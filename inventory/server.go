package inventory

import (
	"cmp"
	"encoding/json"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Server is what the exporter keeps of a Nova server. Every string is valid
// UTF-8 and at most maxLabelBytes long, so it can be used as a label value.
type Server struct {
	ID               string
	Name             string
	ProjectID        string
	Host             string
	Status           string
	VMState          string
	TaskState        string
	PowerState       string
	AvailabilityZone string
	Flavor           string
	ImageID          string
	// HostStatus is Nova's view of the host's compute service (UP, DOWN,
	// UNKNOWN, MAINTENANCE), or "" when Nova does not say.
	HostStatus string
	Updated    time.Time
	// StatusSince is when the current (Status, TaskState, PowerState)
	// began, as best known: Nova's Updated until the exporter saw one of
	// them change.
	StatusSince time.Time
	Addresses   []Address
	// Metadata holds only the keys the exporter was asked to keep.
	Metadata map[string]string
	// ShutoffCause says, for a server the exporter saw become SHUTOFF,
	// why (causeNovaPowerSync, causeUser, causeUnknown): "" for any other
	// server, and while its actions are still to be read.
	ShutoffCause string
	// ShutoffStopped is when the stop that explains the SHUTOFF began, by
	// Nova's clock; zero when unknown.
	ShutoffStopped time.Time
}

// Address is one address of a server on one Nova network.
type Address struct {
	Network string
	// Addr is invalid when Nova's text was not an IP address; Raw keeps it.
	Addr netip.Addr
	Raw  string
	// Type is OS-EXT-IPS:type: "fixed", "floating", or "" when absent.
	Type string
}

// maxLabelBytes bounds every string taken from Nova.
const maxLabelBytes = 1024

// Clean makes s safe as a label value: invalid UTF-8 becomes U+FFFD and the
// text is cut at a rune boundary after maxLabelBytes.
func Clean(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= maxLabelBytes {
		return s
	}
	cut := maxLabelBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// powerStateName maps Nova's power_state code to the name Nova uses.
func powerStateName(code int) string {
	switch code {
	case 0:
		return "nostate"
	case 1:
		return "running"
	case 3:
		return "paused"
	case 4:
		return "shutdown"
	case 6:
		return "crashed"
	case 7:
		return "suspended"
	}
	return "unknown"
}

// novaServer is the subset of a server in Nova's JSON (microversion 2.47 and
// later) that the exporter reads. Fields whose type Nova has changed across
// versions, or that odd clouds fill oddly, are decoded leniently so that one
// strange server cannot fail a whole page.
type novaServer struct {
	ID               string          `json:"id"`
	Name             string          `json:"name"`
	TenantID         string          `json:"tenant_id"`
	Status           string          `json:"status"`
	Updated          string          `json:"updated"`
	Host             string          `json:"OS-EXT-SRV-ATTR:host"`
	VMState          string          `json:"OS-EXT-STS:vm_state"`
	TaskState        *string         `json:"OS-EXT-STS:task_state"`
	PowerState       json.RawMessage `json:"OS-EXT-STS:power_state"`
	AvailabilityZone string          `json:"OS-EXT-AZ:availability_zone"`
	HostStatus       string          `json:"host_status"`
	Flavor           json.RawMessage `json:"flavor"`
	Image            json.RawMessage `json:"image"`
	Addresses        json.RawMessage `json:"addresses"`
	Metadata         json.RawMessage `json:"metadata"`
}

type novaAddress struct {
	Addr string `json:"addr"`
	Type string `json:"OS-EXT-IPS:type"`
}

// toServer converts and sanitises; keep names the metadata keys to retain.
func (n *novaServer) toServer(keep []string) Server {
	s := Server{
		ID:               Clean(n.ID),
		Name:             Clean(n.Name),
		ProjectID:        Clean(n.TenantID),
		Host:             Clean(n.Host),
		Status:           Clean(strings.ToUpper(n.Status)),
		VMState:          Clean(n.VMState),
		AvailabilityZone: Clean(n.AvailabilityZone),
		HostStatus:       Clean(n.HostStatus),
		PowerState:       powerState(n.PowerState),
		Flavor:           Clean(flavorName(n.Flavor)),
		ImageID:          Clean(imageID(n.Image)),
	}
	if n.TaskState != nil {
		s.TaskState = Clean(*n.TaskState)
	}
	if t, err := time.Parse(time.RFC3339, n.Updated); err == nil {
		s.Updated = t
	}
	var networks map[string][]json.RawMessage
	_ = json.Unmarshal(n.Addresses, &networks) // anything but a map of lists: no addresses
	for network, entries := range networks {
		for _, raw := range entries {
			var a novaAddress
			if json.Unmarshal(raw, &a) != nil {
				continue
			}
			addr := Address{Network: Clean(network), Raw: Clean(a.Addr), Type: Clean(a.Type)}
			if ip, err := netip.ParseAddr(strings.TrimSpace(a.Addr)); err == nil {
				addr.Addr = ip.Unmap()
			}
			s.Addresses = append(s.Addresses, addr)
		}
	}
	slices.SortFunc(s.Addresses, func(x, y Address) int {
		return cmp.Or(cmp.Compare(x.Network, y.Network), cmp.Compare(x.Raw, y.Raw))
	})
	var metadata map[string]json.RawMessage
	if len(keep) > 0 {
		_ = json.Unmarshal(n.Metadata, &metadata)
	}
	for _, k := range keep {
		raw, ok := metadata[k]
		if !ok {
			continue
		}
		var v string
		if json.Unmarshal(raw, &v) != nil {
			v = string(raw)
		}
		if s.Metadata == nil {
			s.Metadata = map[string]string{}
		}
		s.Metadata[k] = Clean(v)
	}
	return s
}

func powerState(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return powerStateName(0)
	}
	code, err := strconv.Atoi(strings.Trim(string(raw), `"`))
	if err != nil {
		return "unknown"
	}
	return powerStateName(code)
}

// flavorName reads the flavor's name: `original_name` from microversion 2.47,
// or the `id` of older responses as the best available.
func flavorName(raw json.RawMessage) string {
	var f struct {
		OriginalName string `json:"original_name"`
		ID           string `json:"id"`
	}
	if json.Unmarshal(raw, &f) != nil {
		return ""
	}
	if f.OriginalName != "" {
		return f.OriginalName
	}
	return f.ID
}

// imageID reads the image's id; a volume-booted server has "" instead of an
// object.
func imageID(raw json.RawMessage) string {
	var img struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(raw, &img) != nil {
		return ""
	}
	return img.ID
}
