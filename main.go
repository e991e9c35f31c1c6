// Command openstack-vm-exporter exports the state of OpenStack servers from
// Nova, and whether their addresses answer ICMP echo, as Prometheus metrics.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/exporter"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/demo"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/report"
)

// defaultListenAddress: 9735 is used by none of the peers (openstack-exporter
// 9180, blackbox_exporter 9115, smokeping_prober 9374).
const defaultListenAddress = ":9735"

const exporterName = "openstack_vm_exporter"

func main() {
	app := kingpin.New("openstack-vm-exporter", "Exports OpenStack server state from Nova and ICMP reachability of every server address.")
	app.Version(version.Print(exporterName))
	app.HelpFlag.Short('h')
	configFile := app.Flag("config.file", "Configuration file (YAML). Without it the built-in defaults apply: credentials from $OS_CLOUD/clouds.yaml or OS_* variables, scope host.").String()
	logConfig := &promslog.Config{}
	promslogflag.AddFlags(app, logConfig)

	serve := app.Command("serve", "Run the exporter (the default).").Default()
	webConfig := kingpinflag.AddFlags(serve, defaultListenAddress)
	metricsPath := serve.Flag("web.telemetry-path", "Path under which to expose metrics.").Default("/metrics").String()
	checkConfig := serve.Flag("config.check", "Validate the configuration file and exit.").Bool()
	hostOverride := serve.Flag("openstack.host", "Nova host of this hypervisor; overrides openstack.host of the file (e.g. a Kubernetes node name).").String()

	demoCmd := app.Command("demo", "Run the exporter against a built-in demo cloud on 127.0.0.1 (no OpenStack needed).")
	demoWebConfig := kingpinflag.AddFlags(demoCmd, "127.0.0.1:9735")
	demoPrometheus := demoCmd.Flag("demo.prometheus-address", "Where the demo's Prometheus listens (started when Debian's prometheus is installed); empty: none.").Default("127.0.0.1:19090").String()

	reportCmd := app.Command("report", "Check the known issues once (one inventory refresh, one probe cycle) and print them. Exits 2 when a critical issue is found.")
	reportFormat := reportCmd.Flag("format", "Output format.").Short('f').Default("table").Enum("table", "json", "html")
	reportOutput := reportCmd.Flag("output", "Write to this file instead of standard output.").Short('o').String()
	reportList := reportCmd.Flag("list", "List the known issues checked, and exit.").Bool()
	reportParams := reportCmd.Flag("alerts.params", "YAML file overriding alerts/params.yaml (thresholds), as for the rules.").String()
	reportHost := reportCmd.Flag("openstack.host", "Nova host; overrides openstack.host of the file.").String()
	reportDemo := reportCmd.Flag("demo", "Report on the built-in demo cloud instead of a real one.").Bool()

	command := kingpin.MustParse(app.Parse(os.Args[1:]))
	logger := promslog.New(logConfig)

	if command == reportCmd.FullCommand() {
		os.Exit(runReport(reportOptions{
			configFile: *configFile, host: *reportHost, format: *reportFormat, output: *reportOutput,
			list: *reportList, paramsFile: *reportParams, demo: *reportDemo,
		}, logger))
	}

	if command == demoCmd.FullCommand() {
		if err := runDemo(demoWebConfig, *demoPrometheus, logger); err != nil {
			logger.Error("demo stopped", "err", err)
			os.Exit(1)
		}
		return
	}

	load := func() (*config.Config, error) { return loadConfig(*configFile, *hostOverride) }
	cfg, err := load()
	if err != nil {
		logger.Error("invalid configuration", "err", err)
		os.Exit(1)
	}
	if *checkConfig {
		fmt.Println("configuration is valid")
		return
	}
	if err := runServer(cfg, load, webConfig, *metricsPath, logger); err != nil {
		logger.Error("exporter stopped", "err", err)
		os.Exit(1)
	}
}

type reportOptions struct {
	configFile, host, format, output, paramsFile string
	list, demo                                   bool
}

// runReport runs the one-shot report and returns the exit status: 0, 2
// when a critical issue was found, 1 when the report could not be made.
func runReport(o reportOptions, logger *slog.Logger) int {
	params := alerts.DefaultParams()
	if o.paramsFile != "" {
		var err error
		if params, err = alerts.LoadParams(o.paramsFile); err != nil {
			logger.Error("alert parameters", "err", err)
			return 1
		}
	}
	out := io.Writer(os.Stdout)
	if o.output != "" {
		f, err := os.Create(o.output)
		if err != nil {
			logger.Error("report output", "err", err)
			return 1
		}
		defer f.Close()
		out = f
	}
	if o.list {
		checks, err := report.Catalogue(params, runbooks())
		if err == nil {
			err = report.WriteCatalogue(out, checks)
		}
		if err != nil {
			logger.Error("listing the checks", "err", err)
			return 1
		}
		return 0
	}
	cfg, err := loadConfig(o.configFile, o.host)
	if o.demo {
		var cloud *demo.Cloud
		cloud, cfg, err = demo.StartCloud()
		if err == nil {
			defer cloud.Close()
			demo.ChooseICMPMode(cfg, logger)
		}
	}
	if err != nil {
		logger.Error("invalid configuration", "err", err)
		return 1
	}
	svc, err := exporter.New(cfg, logger)
	if errors.Is(err, probes.ErrPermission) {
		logger.Warn("no ICMP probing in this report", "err", err)
		cfg.Probe.ICMP.Enabled = false
		svc, err = exporter.New(cfg, logger)
	}
	if err != nil {
		logger.Error("setting up", "err", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.OpenStack.Timeout+cfg.Probe.ICMP.Interval+time.Minute)
	defer cancel()
	snap, err := report.Collect(ctx, svc)
	if err != nil {
		logger.Error("collecting", "err", err)
		return 1
	}
	r, err := report.Build(ctx, snap, params, runbooks())
	if err != nil {
		logger.Error("evaluating the known issues", "err", err)
		return 1
	}
	switch o.format {
	case "json":
		err = r.WriteJSON(out)
	case "html":
		err = r.WriteHTML(out)
	default:
		err = r.WriteTable(out)
	}
	if err != nil {
		logger.Error("writing the report", "err", err)
		return 1
	}
	if r.Critical > 0 {
		return 2
	}
	return 0
}

// runDemo starts the demo cloud and serves the exporter on it.
func runDemo(webConfig *web.FlagConfig, promAddr string, logger *slog.Logger) error {
	cloud, cfg, err := demo.StartCloud()
	if err != nil {
		return err
	}
	defer cloud.Close()
	demo.ChooseICMPMode(cfg, logger)
	addr := (*webConfig.WebListenAddresses)[0]
	prometheusLine := "  (install Debian's prometheus package to see the alerts fire in a Prometheus)"
	if promAddr != "" {
		dir, err := os.MkdirTemp("", "openstack-vm-exporter-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		stack, err := demo.StartPrometheus(context.Background(), dir, promAddr, addr)
		if err != nil {
			logger.Warn("the demo's Prometheus did not start", "err", err)
		}
		if stack != nil {
			defer stack.Close()
			prometheusLine = fmt.Sprintf("  alerts:   http://%s/alerts  (the known issues fire within a minute)\n  query:    http://%s/graph?g0.expr=ALERTS", promAddr, promAddr)
		}
	}
	fmt.Printf(`
openstack-vm-exporter demo
  demo cloud (a Keystone and Nova stand-in, not a real cloud): %s
  metrics:  http://%s/metrics
  try:      curl -s http://%s/metrics | grep -E '^openstack_vm_(status|icmp_up)'
%s
  report:   openstack-vm-exporter report --demo   (the same known issues, once, as a table)
Stop with Ctrl-C.

`, cloud.URL, addr, addr, prometheusLine)
	return runServer(cfg, func() (*config.Config, error) { return cfg, nil }, webConfig, "/metrics", logger)
}

// loadConfig reads the file (or takes the defaults) and applies the host
// given on the command line.
func loadConfig(path, host string) (*config.Config, error) {
	cfg := config.Default()
	if path != "" {
		var err error
		if cfg, err = config.Load(path); err != nil {
			return nil, err
		}
	}
	if host != "" {
		if cfg.OpenStack.Scope != "host" {
			return nil, fmt.Errorf("--openstack.host is given but openstack.scope is %q", cfg.OpenStack.Scope)
		}
		cfg.OpenStack.Host = host
	}
	return cfg, nil
}

// runServer starts the inventory and probe loops, serves HTTP, reloads the
// configuration on SIGHUP or POST /-/reload, and stops on SIGINT/SIGTERM.
func runServer(cfg *config.Config, load func() (*config.Config, error), webConfig *web.FlagConfig, metricsPath string, logger *slog.Logger) error {
	logger.Info("starting openstack-vm-exporter", "version", version.Info(), "build_context", version.BuildContext())
	svc, err := exporter.New(cfg, logger)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	loopsDone := make(chan struct{})
	go func() { defer close(loopsDone); svc.Run(ctx) }()

	reload := func() error {
		next, err := load()
		if err == nil {
			err = svc.Reload(next)
		}
		if err != nil {
			logger.Error("configuration reload rejected; the previous configuration keeps running", "err", err)
		}
		return err
	}

	mux := http.NewServeMux()
	mux.Handle(metricsPath, svc.Handler(promhttp.HandlerOpts{
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
		if err := reload(); err != nil {
			http.Error(w, "reload rejected: "+err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "Reloaded")
	})
	if metricsPath != "/" {
		landing, err := web.NewLandingPage(web.LandingConfig{
			Name:        "OpenStack VM Exporter",
			Description: "Nova server state and ICMP reachability of every server address",
			Version:     version.Info(),
			Links: []web.LandingLinks{
				{Address: metricsPath, Text: "Metrics"},
				{Address: "/-/healthy", Text: "Health"},
				{Address: "/-/ready", Text: "Readiness", Description: "ready after the first successful inventory refresh"},
			},
		})
		if err != nil {
			return err
		}
		mux.Handle("/", landing)
	}

	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for sig := range signals {
			if sig == syscall.SIGHUP {
				_ = reload()
				continue
			}
			logger.Info("shutting down", "signal", sig.String())
			stop()
			shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = server.Shutdown(shutdownCtx)
			cancel()
			return
		}
	}()

	err = web.ListenAndServe(server, webConfig, logger)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	stop()
	select {
	case <-loopsDone:
	case <-time.After(10 * time.Second):
		logger.Warn("loops did not stop within 10s")
	}
	return err
}
