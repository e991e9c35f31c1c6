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
	// A SIGHUP (systemctl reload) may come while the exporter starts: its
	// default action would kill the process. Queue it from the very start;
	// the server applies it once running.
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGHUP)

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
	lifecycle := serve.Flag("web.enable-lifecycle", "Enable reloading the configuration by HTTP POST /-/reload (SIGHUP always reloads).").Default("false").Bool()
	writeTimeout := serve.Flag("web.write-timeout", "Longest time to answer one request, a scrape included: a client that stops reading is cut off after it, freeing its scrape slot.").Default("2m").Duration()

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
	if command == serve.FullCommand() || command == demoCmd.FullCommand() {
		// Stopping during start-up, too, goes through the graceful path.
		signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	} else {
		// One-shot commands keep the default actions.
		signal.Stop(signals)
	}

	if command == reportCmd.FullCommand() {
		os.Exit(runReport(reportOptions{
			configFile: *configFile, host: *reportHost, format: *reportFormat, output: *reportOutput,
			list: *reportList, paramsFile: *reportParams, demo: *reportDemo,
		}, logger))
	}

	if command == demoCmd.FullCommand() {
		if err := runDemo(demoWebConfig, *demoPrometheus, signals, logger); err != nil {
			logger.Error("demo stopped", "err", err)
			os.Exit(1)
		}
		return
	}

	// The one copy of the configuration: the coordinator's.
	coord := config.NewCoordinator(func() (*config.Config, error) { return loadConfig(*configFile, *hostOverride) })
	cfg, err := coord.Load()
	if err != nil {
		logger.Error("invalid configuration", "err", err)
		os.Exit(1)
	}
	if *checkConfig {
		fmt.Println("configuration is valid")
		return
	}
	if err := runServer(coord, cfg, serverOptions{web: webConfig, metricsPath: *metricsPath, lifecycle: *lifecycle,
		writeTimeout: *writeTimeout, signals: signals}, logger); err != nil {
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
	newService := exporter.New
	deps := exporter.Deps{Logger: logger}
	if o.demo {
		// The servers that die in the demo are dead from the start: the
		// report sees one probe cycle.
		fleet, network := demoNetwork(logger)
		if network != nil {
			defer network.Close()
			if err := network.Break(); err != nil {
				logger.Warn("the demo could not cut its dying servers off", "err", err)
			}
			newService = demoService(network)
		}
		var cloud *demo.Cloud
		cloud, cfg, err = demo.StartCloud(fleet)
		if err == nil {
			defer cloud.Close()
			deps.Getenv = cloud.Getenv
			demo.ChooseICMPMode(cfg, logger)
		}
	}
	if err != nil {
		logger.Error("invalid configuration", "err", err)
		return 1
	}
	svc, err := newService(cfg, deps)
	if errors.Is(err, probes.ErrPermission) {
		logger.Warn("no ICMP probing in this report", "err", err)
		cfg.Probe.ICMP.Enabled = false
		svc, err = newService(cfg, deps)
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
	return r.ExitStatus()
}

// demoNetwork builds the demo's network namespaces and returns the fleet
// placed in them; where it cannot, the fleet on loopback addresses and a
// nil network.
func demoNetwork(logger *slog.Logger) ([]demo.Server, *demo.Network) {
	fleet := demo.Servers(time.Now(), true)
	network, err := demo.StartNetwork(fleet)
	if err != nil {
		logger.Warn("the demo's servers are on loopback addresses, where every address answers: no reachability alert can fire",
			"reason", err)
		return demo.Servers(time.Now(), false), nil
	}
	return fleet, network
}

// demoService builds the exporter with its ICMP sockets in the demo
// network's hypervisor namespace (no default route): probes reach the
// demo's servers and nothing else. The HTTP clients and listeners stay in
// the machine's namespace.
func demoService(network *demo.Network) func(*config.Config, exporter.Deps) (*exporter.Service, error) {
	return func(cfg *config.Config, d exporter.Deps) (svc *exporter.Service, err error) {
		nerr := network.Do(func() error {
			svc, err = exporter.New(cfg, d)
			return nil
		})
		return svc, errors.Join(nerr, err)
	}
}

// runDemo starts the demo cloud and serves the exporter on it.
func runDemo(webConfig *web.FlagConfig, promAddr string, signals <-chan os.Signal, logger *slog.Logger) error {
	fleet, network := demoNetwork(logger)
	var inNetwork func(func() error) error
	reachability := "  reachability: none (run as root with iproute2 and nftables for the network namespaces)"
	if network != nil {
		defer network.Close()
		inNetwork = network.Do
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go network.BreakAfter(ctx, time.Minute, logger)
		reachability = "  reachability: servers in network namespaces; guest-crashes, the rack of demo-hypervisor-6 and\n" +
			"                the servers of demo-hypervisor-8 (disabled, then losing power) stop answering a\n" +
			"                minute in, lossy-link loses half its pings, slow-link answers in 80 ms;\n" +
			"                port-down-silent's port is DOWN and it stops answering a minute in,\n" +
			"                port-down-answers' port is DOWN while it answers"
	}
	cloud, cfg, err := demo.StartCloud(fleet)
	if err != nil {
		return err
	}
	defer cloud.Close()
	demo.ChooseICMPMode(cfg, logger)
	side, err := demo.StartSideExporters(cfg, cloud.Getenv, network)
	if err != nil {
		return err
	}
	defer side.Close()
	sideCtx, stopSide := context.WithCancel(context.Background())
	defer stopSide()
	go side.KillHostAfter(sideCtx, time.Minute, logger)
	addr := (*webConfig.WebListenAddresses)[0]
	prometheusLine := "  (install Debian's prometheus package to see the alerts fire in a Prometheus)"
	reachability += "\n  ports:        port-binding-failed's port failed to bind; every port of demo-hypervisor-9 failed to bind" +
		"\n                (its OVN chassis is gone)" +
		"\n  beside it:    more exporters, each misconfigured or dying, for the exporter's own alerts"
	if promAddr != "" {
		dir, err := os.MkdirTemp("", "openstack-vm-exporter-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		stack, err := demo.StartPrometheus(context.Background(), dir, promAddr, addr, side.Targets()...)
		if err != nil {
			logger.Warn("the demo's Prometheus did not start", "err", err)
		}
		if stack != nil {
			defer stack.Close()
			prometheusLine = fmt.Sprintf("  alerts:   http://%s/alerts  (state alerts fire within a minute, every alert within three)\n  query:    http://%s/graph?g0.expr=ALERTS", promAddr, promAddr)
		}
	}
	fmt.Printf(`
openstack-vm-exporter demo
  demo cloud (a Keystone, Nova and Neutron stand-in, not a real cloud): %s
  metrics:  http://%s/metrics
  try:      curl -s http://%s/metrics | grep -E '^openstack_vm_(status|icmp_up)'
%s
%s
  report:   openstack-vm-exporter report --demo   (the same known issues, once, as a table)
Stop with Ctrl-C.

`, cloud.URL, addr, addr, prometheusLine, reachability)
	coord := config.NewCoordinator(func() (*config.Config, error) { return cfg, nil })
	if _, err := coord.Load(); err != nil {
		return err
	}
	return runServer(coord, cfg, serverOptions{web: webConfig, metricsPath: "/metrics",
		writeTimeout: 2 * time.Minute, signals: signals, getenv: cloud.Getenv, inNetwork: inNetwork}, logger)
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

// shutdownTimeout bounds the whole graceful stop (requests in flight and the
// loops), well under the systemd unit's TimeoutStopSec=20s, after which
// systemd would kill the process.
const shutdownTimeout = 10 * time.Second

// runServer starts the inventory and probe loops, serves HTTP, reloads the
// configuration on SIGHUP or POST /-/reload, and stops on SIGINT/SIGTERM.
func runServer(coord *config.Coordinator, cfg *config.Config, o serverOptions, logger *slog.Logger) error {
	logger.Info("starting openstack-vm-exporter", "version", version.Info(), "build_context", version.BuildContext())
	w, err := wire(coord, cfg, o, logger)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	loopsDone := make(chan struct{})
	go func() { defer close(loopsDone); w.svc.Run(ctx) }()

	server := &http.Server{
		Handler:           w.handler,
		ReadHeaderTimeout: 10 * time.Second,
		// Requests carry no body worth waiting for.
		ReadTimeout: 30 * time.Second,
		// A client that stops reading would otherwise hold one of the four
		// scrape slots for ever. The default (2m) leaves a large scrape
		// (50,000 servers, tens of MB unzipped) time over a slow link.
		WriteTimeout: o.writeTimeout,
		IdleTimeout:  2 * time.Minute,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- web.ListenAndServe(server, o.web, logger) }()

	var serveFailed error
wait:
	for {
		select {
		case serveFailed = <-serveErr:
			// The listener failed (address in use, unreadable web config).
			break wait
		case sig := <-o.signals:
			if sig == syscall.SIGHUP {
				logger.Info("reloading the configuration", "signal", sig.String())
				_ = w.reload()
				continue
			}
			logger.Info("shutting down", "signal", sig.String(), "bound", shutdownTimeout)
			break wait
		}
	}
	// Whatever ends the server, the loops get the same bounded time to
	// stop, while the requests in flight end.
	deadline, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	stop()
	if serveFailed == nil {
		if err := server.Shutdown(deadline); err != nil {
			logger.Warn("requests still in flight at the shutdown bound are cut off", "err", err)
			_ = server.Close()
		}
	}
	select {
	case <-loopsDone:
	case <-deadline.Done():
		logger.Warn("the inventory and probe loops did not stop within the shutdown bound; exiting anyway", "bound", shutdownTimeout)
	}
	return serveFailed
}
