package main

import (
	"fmt"
	"html"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/exporter"
)

type serverOptions struct {
	web         *web.FlagConfig
	metricsPath string
	// lifecycle enables POST /-/reload, as Prometheus's flag of that name.
	lifecycle    bool
	writeTimeout time.Duration
	signals      <-chan os.Signal
	// getenv reads the OS_* variables (nil: the process environment); the
	// demo gives its cloud's.
	getenv func(string) string
	// inNetwork runs fn where the ICMP sockets are to be opened (nil: here);
	// the demo opens them in its network namespace.
	inNetwork func(fn func() error) error
}

// wiring is the running exporter's parts.
type wiring struct {
	svc     *exporter.Service
	handler http.Handler
	reload  func() error
}

// wire builds the exporter's parts in the order they start. The
// configuration (cfg, coord's first load) is held once, by coord; each part
// applies its own section of a reload.
func wire(coord *config.Coordinator, cfg *config.Config, o serverOptions, logger *slog.Logger) (*wiring, error) {
	deps := exporter.Deps{Logger: logger, Getenv: o.getenv, ReloadStatus: coord.LastReload}
	// 1. The inventory: credentials, the API client (no I/O yet).
	inv, err := exporter.NewInventorySection(cfg, deps)
	if err != nil {
		return nil, err
	}
	// 2. The probe engine (its sockets, where they belong) and the loop.
	inNetwork := o.inNetwork
	if inNetwork == nil {
		inNetwork = func(fn func() error) error { return fn() }
	}
	var loop *exporter.ProbeLoop
	if err := inNetwork(func() (err error) {
		loop, err = exporter.NewProbeLoopFromConfig(cfg.Probe.ICMP, inv.Inventory().Snapshot, deps)
		return err
	}); err != nil {
		return nil, err
	}
	// 3. The registries and the exposition.
	svc := exporter.NewService(inv, loop, deps)
	// 4. Reloads: each part applies its section, all or none.
	coord.Subscribe(svc.Sections()...)
	reload := func() error {
		err := coord.Reload()
		if err != nil {
			logger.Error("configuration reload rejected; the previous configuration keeps running", "err", err)
			return err
		}
		logger.Info("configuration reloaded")
		return nil
	}
	// 5. HTTP.
	handler, err := routes(svc, reload, o, logger)
	if err != nil {
		return nil, err
	}
	return &wiring{svc: svc, handler: handler, reload: reload}, nil
}

// routes serves the metrics, the health and readiness checks, the reload
// endpoint and the landing page.
func routes(svc *exporter.Service, reload func() error, o serverOptions, logger *slog.Logger) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.Handle(o.metricsPath, svc.Handler(promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(logger.Handler(), slog.LevelError),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             30 * time.Second,
	}))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "Healthy")
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !svc.Ready() {
			http.Error(w, "Not ready: no successful inventory refresh yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "Ready")
	})
	mux.HandleFunc("/-/reload", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		// Without a web config anyone who reaches the port could trigger
		// reloads: off unless asked for, as in Prometheus.
		if !o.lifecycle {
			http.Error(w, "Lifecycle API is not enabled: start the exporter with --web.enable-lifecycle, or send SIGHUP", http.StatusForbidden)
			return
		}
		if err := reload(); err != nil {
			http.Error(w, "reload rejected: "+err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "Reloaded")
	})
	if o.metricsPath != "/" {
		reloadNote := "Configuration reload: SIGHUP. POST /-/reload is off (start with --web.enable-lifecycle to allow it)."
		if o.lifecycle {
			reloadNote = "Configuration reload: SIGHUP, or POST /-/reload (--web.enable-lifecycle is on)."
		}
		landing, err := web.NewLandingPage(web.LandingConfig{
			Name:        "OpenStack VM Exporter",
			Description: "Nova server state and ICMP reachability of every server address",
			Version:     version.Info(),
			Links: []web.LandingLinks{
				{Address: o.metricsPath, Text: "Metrics"},
				{Address: "/-/healthy", Text: "Health"},
				{Address: "/-/ready", Text: "Readiness", Description: "ready after the first successful inventory refresh"},
			},
			ExtraHTML: "<p>" + html.EscapeString(reloadNote) + "</p>",
		})
		if err != nil {
			return nil, err
		}
		mux.Handle("/", landing)
	}

	return mux, nil
}
