#!/usr/bin/python3
"""A real Keystone and the real Nova compute API on 127.0.0.1 with sqlite.

Run with Debian's /usr/bin/python3 (python3-keystone, python3-nova).
Subcommands (DIR is the lab's working directory):
  init DIR TEMPLATE          databases and keys, copied from TEMPLATE if it
                             exists, else built and saved there
  keystone DIR PORT [TTL]    serve Keystone; with TTL, one whose tokens live
                             TTL seconds (same database and keys: the
                             tokens are valid everywhere until then)
  nova DIR PORT              serve the Nova compute API
  neutron DIR                exec the real neutron-server (ML2/OVN, sqlite,
                             no message bus) on the OVN databases of DIR/ovn
  register DIR               users, services and endpoints (Keystone up)
  seed DIR                   servers from JSON on stdin
  update DIR                 changes from JSON on stdin
  service DIR HOST STATE [REASON]
                             compute service of HOST: UP, DOWN, MAINTENANCE
                             (disabled with REASON, "lab maintenance" if none)
  stop DIR BY UUID...        stop servers as Nova records it: BY "nova" as
                             nova-compute's power sync, else as that user
  action DIR UUID ACTION BY  record an instance action only, by that user
  migrations DIR             migration records from JSON on stdin
Ports are read from DIR/ports.json, written by the Go side.
"""
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import traceback
import urllib.request
import uuid as uuidlib
from datetime import datetime, timezone
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

PASSWORD = "lab-admin-password"
NOVA_PASSWORD = "lab-nova-password"
NEUTRON_PASSWORD = "lab-neutron-password"
READER_PASSWORD = "lab-reader-password"


def ports(d):
    with open(os.path.join(d, "ports.json")) as f:
        return json.load(f)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def keystone_conf(d, name="keystone.conf", expiration=3600, cache=True):
    write(os.path.join(d, name), f"""[DEFAULT]
debug = false
[database]
connection = sqlite:///{d}/keystone.db
[token]
provider = fernet
expiration = {expiration}
[fernet_tokens]
key_repository = {d}/fernet-keys
[credential]
key_repository = {d}/credential-keys
[cache]
# Keystone's own in-memory cache: without it, one token validation (every
# request Nova and Neutron get, with the service token's too) costs about
# 1 s of CPU in role lookups, half of the lab's CPU in a test run; with it,
# 15 ms. Revocation, a disabled user and a role change invalidate it, in the
# one Keystone process that serves them (the lab's own); the short-lived
# Keystone beside it (ShortLivedAuthURL) caches nothing: it shares the
# database, not this process's cache.
enabled = {"true" if cache else "false"}
backend = dogpile.cache.memory
[identity]
# Cheap password hashes: every login of a test checks one.
password_hash_rounds = 4
""")


def nova_conf(d):
    p = ports(d)
    auth = f"""auth_type = password
auth_url = http://127.0.0.1:{p['keystone']}/v3
project_domain_name = Default
user_domain_name = Default
project_name = service
username = nova
password = {NOVA_PASSWORD}
region_name = RegionOne
"""
    new_defaults = "true" if p.get("new_policy_defaults") else "false"
    write(os.path.join(d, "nova.conf"), f"""[DEFAULT]
transport_url = fake://
host = lab-api
state_path = {d}
# Services stay up however long a test runs; DOWN is set with forced_down.
service_down_time = 86400
[api]
auth_strategy = keystone
[api_database]
connection = sqlite:///{d}/nova_api.db
[database]
connection = sqlite:///{d}/nova_cell1.db
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:{p['keystone']}/v3
{auth}# Validate every token with Keystone: revocation must bite at once.
token_cache_time = -1
[neutron]
{auth}endpoint_override = http://127.0.0.1:{p['neutron']}
[placement]
{auth}# Nova sends its own token beside the user's to Neutron, as deployments
# do: Neutron then accepts a user's token that expired between Nova's check
# and its own (else Nova answers 400 for a listing whose token expired in
# the middle of it).
[service_user]
send_service_user_token = true
{auth}[oslo_concurrency]
lock_path = {d}/locks
[oslo_policy]
enforce_scope = {new_defaults}
enforce_new_defaults = {new_defaults}
# Overrides a test sets (Lab.SetNovaPolicy); oslo.policy rereads the file
# when it changes.
policy_file = {d}/policy.yaml
""")
    policy = os.path.join(d, "policy.yaml")
    if not os.path.exists(policy):
        write(policy, "# Overrides of a test (Lab.SetNovaPolicy).\n")
    write(os.path.join(d, "api-paste.ini"), """[composite:osapi_compute]
use = call:nova.api.openstack.urlmap:urlmap_factory
/: oscomputeversions
/v2.1: oscomputeversion_v2
/v2.1/+: openstack_compute_api_v21

[composite:openstack_compute_api_v21]
use = call:nova.api.auth:pipeline_factory_v21
keystone = compute_req_id faultwrap sizelimit authtoken keystonecontext osapi_compute_app_v21

[filter:compute_req_id]
paste.filter_factory = nova.api.compute_req_id:ComputeReqIdMiddleware.factory
[filter:faultwrap]
paste.filter_factory = nova.api.openstack:FaultWrapper.factory
[filter:sizelimit]
paste.filter_factory = oslo_middleware:RequestBodySizeLimiter.factory
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
[filter:keystonecontext]
paste.filter_factory = nova.api.auth:NovaKeystoneContext.factory
[app:osapi_compute_app_v21]
paste.app_factory = nova.api.openstack.compute:APIRouterV21.factory
[pipeline:oscomputeversions]
pipeline = faultwrap oscomputeversionapp
[pipeline:oscomputeversion_v2]
pipeline = compute_req_id faultwrap oscomputeversionapp_v2
[app:oscomputeversionapp]
paste.app_factory = nova.api.openstack.compute.versions:Versions.factory
[app:oscomputeversionapp_v2]
paste.app_factory = nova.api.openstack.compute.versions:VersionsV2.factory
""")


def neutron_conf(d):
    """ML2 with the OVN mechanism driver, sqlite, no message bus: every
    setting REAL-OVN.md found necessary, each with its reason."""
    p = ports(d)
    os.makedirs(os.path.join(d, "neutron"), exist_ok=True)
    os.makedirs(os.path.join(d, "neutron-policy.d"), exist_ok=True)
    write(os.path.join(d, "neutron.conf"), f"""[DEFAULT]
debug = false
core_plugin = ml2
# OVN's L3 plugin even for pure L2: without it the maintenance worker
# crashes on get_floatingip.
service_plugins = ovn-router
auth_strategy = keystone
bind_host = 127.0.0.1
bind_port = {p['neutron']}
# One API worker: with 0 no hash-ring node registers, OVN's agent list stays
# empty and every binding is refused.
api_workers = 1
# No message bus.
transport_url = fake://
rpc_workers = 0
rpc_state_report_workers = 0
dhcp_agent_notification = false
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
allow_overlapping_ips = true
state_path = {d}/neutron
api_paste_config = {d}/neutron-api-paste.ini
use_stderr = true
[database]
# Neutron's workers are processes that all write (API, OVN event handlers,
# maintenance, periodic): sqlite's default 5 s wait for the write lock is
# too short on a loaded machine ("database is locked": a 500, or a lost
# "port up" from OVN).
connection = sqlite:///{d}/neutron.db?timeout=60
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:{p['keystone']}/v3
auth_type = password
auth_url = http://127.0.0.1:{p['keystone']}/v3
project_domain_name = Default
user_domain_name = Default
project_name = service
username = neutron
password = {NEUTRON_PASSWORD}
region_name = RegionOne
# Nova's service token (its [service_user], admin role here) lets a
# user's token that expired during a request still pass, as in deployments
# that send service tokens.
service_token_roles = admin
service_token_roles_required = true
# Tokens are cached (keystonemiddleware's default 300 s, in memory): Nova
# asks Neutron on every server listing, and a Keystone check per request
# costs the lab more than all of Neutron's own work.
[oslo_concurrency]
lock_path = {d}/locks
[oslo_policy]
# Overrides of a test (Lab.SetNeutronPolicy); reread when the file changes.
policy_file = {d}/neutron-policy.yaml
# An empty directory of its own: not /etc/neutron/policy.d.
policy_dirs = {d}/neutron-policy.d
[ml2]
mechanism_drivers = ovn
type_drivers = geneve,flat
tenant_network_types = geneve
extension_drivers = port_security
[ml2_type_geneve]
# Neutron reads every VNI of the range from its database at each start
# (sync_allocations): 65,536 rows took 1.5 of neutron-server's 6 CPU-seconds
# to start. A lab makes a few networks.
vni_ranges = 1:1000
max_header_size = 38
[ml2_type_flat]
flat_networks = *
[ovn]
ovn_nb_connection = unix:{d}/ovn/nb.sock
ovn_sb_connection = unix:{d}/ovn/sb.sock
ovn_metadata_enabled = true
neutron_sync_mode = off
""")
    policy = os.path.join(d, "neutron-policy.yaml")
    if not os.path.exists(policy):
        write(policy, "# Overrides of a test (Lab.SetNeutronPolicy).\n")
    write(os.path.join(d, "neutron-api-paste.ini"), """[composite:neutron]
use = egg:Paste#urlmap
/: neutronversions_composite
/v2.0: neutronapi_v2_0

[composite:neutronapi_v2_0]
use = call:neutron.auth:pipeline_factory
keystone = cors http_proxy_to_wsgi request_id catch_errors authtoken keystonecontext extensions neutronapiapp_v2_0

[composite:neutronversions_composite]
use = call:neutron.auth:pipeline_factory
keystone = cors http_proxy_to_wsgi neutronversions

[filter:request_id]
paste.filter_factory = oslo_middleware:RequestId.factory
[filter:catch_errors]
paste.filter_factory = oslo_middleware:CatchErrors.factory
[filter:cors]
paste.filter_factory = oslo_middleware.cors:filter_factory
oslo_config_project = neutron
[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware.http_proxy_to_wsgi:HTTPProxyToWSGI.factory
[filter:keystonecontext]
paste.filter_factory = neutron.auth:NeutronKeystoneContext.factory
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
[filter:extensions]
paste.filter_factory = neutron.api.extensions:plugin_aware_extension_middleware_factory
[app:neutronversions]
paste.app_factory = neutron.pecan_wsgi.app:versions_factory
[app:neutronapiapp_v2_0]
paste.app_factory = neutron.api.v2.router:APIRouter.factory
""")


def neutron_schema(d):
    """Neutron's schema on sqlite from its models (neutron-db-manage's
    migrations do not run on sqlite)."""
    import sqlalchemy
    import neutron.db.migration.models.head  # noqa: F401  every model
    from neutron_lib.db import model_base
    engine = sqlalchemy.create_engine(f"sqlite:///{d}/neutron.db")
    model_base.BASEV2.metadata.create_all(engine)
    engine.dispose()
    wal(os.path.join(d, "neutron.db"))


# neutron-server's own entry point, with one lab-only addition. On sqlite a
# transaction that read and then writes while another connection committed
# gets "database is locked" at once (no busy wait applies), where MySQL
# would have reported a deadlock that Neutron retries. Seen under load as
# a 500 on POST /v2.0/ports and as a lost "port up" from OVN. Reporting it
# as the deadlock it is gives it Neutron's own retries.
def import_neutron():
    from neutron.cmd.eventlet.server import main  # patches eventlet in first
    import sqlalchemy.exc
    from oslo_db import exception
    from oslo_db.sqlalchemy import exc_filters

    @exc_filters.filters("sqlite", sqlalchemy.exc.OperationalError, r".*database is locked")
    def _sqlite_locked(error, match, engine_name, is_disconnect):
        raise exception.DBDeadlock(error)
    return main


def serve_neutron(d):
    main = import_neutron()
    sys.argv = ["neutron-server", "--config-file", os.path.join(d, "neutron.conf")]
    sys.exit(main())


STATE_FILES = ["neutron.db", "keystone.db", "nova_api.db", "nova_cell0.db", "nova_cell1.db", "fernet-keys", "credential-keys"]


def init(d, template):
    """Databases and keys: copied from the template when there is one."""
    os.makedirs(os.path.join(d, "locks"), exist_ok=True)
    keystone_conf(d)
    nova_conf(d)
    neutron_conf(d)
    if template and os.path.exists(os.path.join(template, "origin.json")):
        for name in STATE_FILES:
            src = os.path.join(template, name)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(d, name))
            else:
                shutil.copy(src, os.path.join(d, name))
        relocate(d, template)
        print("warm")
        return
    km = ["keystone-manage", "--config-file", os.path.join(d, "keystone.conf")]
    p = ports(d)
    for args in (["db_sync"], ["fernet_setup", "--keystone-user", "root", "--keystone-group", "root"],
                 ["credential_setup", "--keystone-user", "root", "--keystone-group", "root"],
                 ["bootstrap", "--bootstrap-password", PASSWORD, "--bootstrap-region-id", "RegionOne",
                  "--bootstrap-admin-url", f"http://127.0.0.1:{p['keystone']}/v3/",
                  "--bootstrap-internal-url", f"http://127.0.0.1:{p['keystone']}/v3/",
                  "--bootstrap-public-url", f"http://127.0.0.1:{p['keystone']}/v3/"]):
        r = subprocess.run(km + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise SystemExit(f"keystone-manage {args[0]} failed:\n{r.stdout[-3000:]}")
    wal(os.path.join(d, "keystone.db"))
    nova_manage(d, ["api_db", "sync"])
    nova_manage(d, ["cell_v2", "map_cell0", "--database_connection", f"sqlite:///{d}/nova_cell0.db"])
    nova_manage(d, ["cell_v2", "create_cell", "--name", "cell1", "--database_connection",
                    f"sqlite:///{d}/nova_cell1.db", "--transport-url", "fake://"])
    nova_manage(d, ["db", "sync"])
    for db in ("nova_api.db", "nova_cell0.db", "nova_cell1.db"):
        wal(os.path.join(d, db))
    neutron_schema(d)
    print("cold")


def save_template(d, template):
    """Keep the registered lab as the template of the next ones. Written
    aside and renamed, so that labs starting in parallel never see half."""
    tmp = f"{template}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in STATE_FILES:
        src, dst = os.path.join(d, name), os.path.join(tmp, name)
        if os.path.isdir(src):
            shutil.copytree(src, dst)
        else:
            checkpoint(src)
            shutil.copy(src, dst)
    p = ports(d)
    write(os.path.join(tmp, "origin.json"), json.dumps({"dir": d, "keystone": p["keystone"], "nova": p["nova"], "neutron": p["neutron"]}))
    try:
        os.rename(tmp, template)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def relocate(d, template):
    """Point what a template recorded (paths, ports) at this lab."""
    with open(os.path.join(template, "origin.json")) as f:
        origin = json.load(f)
    p = ports(d)
    c = sqlite3.connect(os.path.join(d, "nova_api.db"))
    c.execute("UPDATE cell_mappings SET database_connection = replace(database_connection, ?, ?)", (origin["dir"], d))
    c.commit()
    c.close()
    c = sqlite3.connect(os.path.join(d, "keystone.db"))
    for svc in ("keystone", "nova", "neutron"):
        c.execute("UPDATE endpoint SET url = replace(url, ?, ?)",
                  (f"127.0.0.1:{origin[svc]}/", f"127.0.0.1:{p[svc]}/"))
        c.execute("UPDATE endpoint SET url = ? WHERE url = ?",
                  (f"http://127.0.0.1:{p[svc]}", f"http://127.0.0.1:{origin[svc]}"))
    c.commit()
    c.close()


def wal(path):
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode=WAL")
    c.close()


def checkpoint(path):
    c = sqlite3.connect(path)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def nova_manage(d, args):
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", "import sys; from nova.cmd import manage; sys.argv[0]='nova-manage'; sys.exit(manage.main())",
                        "--config-file", os.path.join(d, "nova.conf")] + args,
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode not in (0,):
        raise SystemExit(f"nova-manage {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}")


class OneAtATimeServer(WSGIServer):
    # Clients that connect while a request is served wait in the backlog
    # (5 by default: a burst of logins beyond that waits for SYN retries).
    request_queue_size = 128


class QuietHandler(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


def serve_keystone_app(app, port):
    """Serves Keystone one request at a time. Debian's Keystone stack is not
    safe on native threads, and each of these faults broke a lab once
    concurrent requests hit it: oslo.log swaps logging's locks for eventlet's
    whenever eventlet is imported, even unpatched, and two threads that
    contend for one wedge the process for good ("cannot switch to a
    different thread"); Keystone's policy enforcer is published before its
    rules are registered, so a request racing the first one is refused
    (403 on identity:validate_token); and SQLite connections get closed from
    the wrong thread. Python runs one thread at a time anyway."""
    httpd = make_server("127.0.0.1", int(port), app, server_class=OneAtATimeServer, handler_class=QuietHandler)
    print("serving", flush=True)
    httpd.serve_forever()


def serve_keystone(d, port, ttl=None):
    name = "keystone.conf"
    if ttl:
        name = f"keystone-ttl{ttl}.conf"
        keystone_conf(d, name, int(ttl), cache=False)
    os.environ["OS_KEYSTONE_CONFIG_DIR"] = d
    os.environ["OS_KEYSTONE_CONFIG_FILES"] = name
    from keystone.server import wsgi
    serve_keystone_app(wsgi.initialize_public_application(), port)


def serve_nova(d, port):
    # Nova runs on eventlet: patch before anything imports sockets or
    # threads, and serve with eventlet's WSGI server, as nova-api does.
    import eventlet
    eventlet.monkey_patch()
    import eventlet.wsgi
    os.environ["OS_NOVA_CONFIG_DIR"] = d
    # The first file is the paste configuration.
    os.environ["OS_NOVA_CONFIG_FILES"] = "api-paste.ini;nova.conf"
    from nova.api.openstack.compute import wsgi
    app = wsgi.init_application()
    sock = eventlet.listen(("127.0.0.1", int(port)))
    print("serving", flush=True)
    eventlet.wsgi.server(sock, app, log=sys.stderr, log_output=True)


def api(method, url, body=None, token=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    with urllib.request.urlopen(req) as resp:
        data = resp.read()
        return resp.headers, (json.loads(data) if data else None)


def register(d):
    """Users, projects, services and endpoints, through Keystone's API."""
    p = ports(d)
    ks = f"http://127.0.0.1:{p['keystone']}/v3"
    headers, _ = api("POST", ks + "/auth/tokens", {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": PASSWORD}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
    tok = headers["X-Subject-Token"]

    def find(kind, name):
        _, r = api("GET", f"{ks}/{kind}?name={name}", token=tok)
        return r[kind][0]["id"] if r[kind] else None

    def ensure(kind, singular, body):
        existing = find(kind, body["name"])
        if existing:
            return existing
        _, r = api("POST", f"{ks}/{kind}", {singular: body}, token=tok)
        return r[singular]["id"]

    service_project = ensure("projects", "project", {"name": "service", "domain_id": "default"})
    demo_project = ensure("projects", "project", {"name": "lab-project", "domain_id": "default"})
    admin_role = find("roles", "admin")
    reader_role = ensure("roles", "role", {"name": "reader"})
    member_role = ensure("roles", "role", {"name": "member"})
    for user, password in (("nova", NOVA_PASSWORD), ("neutron", NEUTRON_PASSWORD)):
        uid = ensure("users", "user", {"name": user, "domain_id": "default", "password": password})
        api("PUT", f"{ks}/projects/{service_project}/users/{uid}/roles/{admin_role}", token=tok)
    reader = ensure("users", "user", {"name": "lab-reader", "domain_id": "default", "password": READER_PASSWORD})
    api("PUT", f"{ks}/projects/{demo_project}/users/{reader}/roles/{reader_role}", token=tok)
    api("PUT", f"{ks}/projects/{demo_project}/users/{reader}/roles/{member_role}", token=tok)
    for name, typ, url in (("nova", "compute", f"http://127.0.0.1:{p['nova']}/v2.1"),
                           ("neutron", "network", f"http://127.0.0.1:{p['neutron']}")):
        svc = ensure("services", "service", {"name": name, "type": typ})
        for iface in ("public", "internal", "admin"):
            api("POST", f"{ks}/endpoints", {"endpoint": {"service_id": svc, "interface": iface, "region_id": "RegionOne", "url": url}}, token=tok)
    print(json.dumps({"admin_password": PASSWORD, "reader_password": READER_PASSWORD}))


_nova_envs = {}


def nova_env(d):
    """Nova's configuration, objects and the admin context, once per
    process (the helper serves many commands)."""
    if d not in _nova_envs:
        _nova_envs[d] = _nova_env(d)
    return _nova_envs[d]


def _nova_env(d):
    os.environ["OS_NOVA_DISABLE_EVENTLET_PATCHING"] = "1"
    import nova.conf  # noqa: F401
    from nova import config, context, objects
    config.parse_args([], default_config_files=[os.path.join(d, "nova.conf")])
    objects.register_all()
    ctxt = context.get_admin_context()
    cell = next(c for c in objects.CellMappingList.get_all(ctxt) if c.name == "cell1")
    return ctxt, cell, objects, context


def parse_time(s):
    if not s:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(timezone.utc).replace(tzinfo=None)


def seed(d):
    servers = json.load(sys.stdin)
    ctxt, cell, objects, context = nova_env(d)
    from nova.network import model as nw
    flavors = {}

    def flavor(name):
        if name not in flavors:
            try:
                flavors[name] = objects.Flavor.get_by_name(ctxt, name)
            except Exception:
                f = objects.Flavor(context=ctxt, name=name, memory_mb=512, vcpus=1, root_gb=1, ephemeral_gb=0,
                                   swap=0, flavorid=str(uuidlib.uuid4()), is_public=True, extra_specs={})
                f.create()
                flavors[name] = f
        return flavors[name]

    stamps = []
    with context.target_cell(ctxt, cell) as cctxt:
        for s in servers:
            vifs = []
            by_vif = {}  # one VIF per Neutron port, else per network name
            for a in s.get("addresses") or []:
                by_vif.setdefault(a.get("port_id") or ("net:" + a["network"]), []).append(a)
            for i, addrs in enumerate(by_vif.values()):
                net = addrs[0]["network"]
                subnets = {}
                fixed = None
                for a in addrs:
                    version = 6 if ":" in a["address"] else 4
                    if a.get("type") == "floating" and fixed is not None:
                        fixed.add_floating_ip(nw.IP(address=a["address"], type="floating"))
                        continue
                    cidr = a.get("cidr") or ("2001:2::/48" if version == 6 else "198.18.0.0/15")
                    fixed = nw.FixedIP(address=a["address"])
                    subnets.setdefault(cidr, nw.Subnet(cidr=cidr, ips=[]))["ips"].append(fixed)
                first = addrs[0]
                vifs.append(nw.VIF(id=first.get("port_id") or str(uuidlib.uuid4()),
                                   address=first.get("mac") or "fa:16:3e:00:%02x:%02x" % (i // 256, i % 256),
                                   network=nw.Network(id=first.get("network_id") or str(uuidlib.uuid4()), label=net,
                                                      subnets=sorted(subnets.values(), key=lambda sn: ":" in sn["cidr"]))))
            fl = flavor(s.get("flavor") or "m1.small")
            inst = objects.Instance(context=cctxt)
            inst.uuid = s.get("id") or str(uuidlib.uuid4())
            inst.project_id = s.get("project_id") or "lab-project"
            inst.user_id = s.get("user_id") or "lab-user"
            inst.display_name = s.get("name") or inst.uuid
            inst.hostname = "vm"
            inst.host = s.get("host") or None
            inst.node = s.get("node") or s.get("host") or None
            inst.vm_state = s.get("vm_state") or "active"
            inst.task_state = s.get("task_state") or None
            inst.power_state = s.get("power_state", 1)
            inst.availability_zone = s.get("availability_zone") or "nova"
            inst.image_ref = s.get("image_ref") or ""
            inst.flavor = fl
            inst.instance_type_id = fl.id
            inst.memory_mb, inst.vcpus, inst.root_gb, inst.ephemeral_gb = fl.memory_mb, fl.vcpus, fl.root_gb, 0
            inst.metadata = s.get("metadata") or {}
            inst.system_metadata = {}
            inst.info_cache = objects.InstanceInfoCache(network_info=nw.NetworkInfo(vifs))
            inst.launched_at = datetime.now(timezone.utc)
            inst.create()
            objects.InstanceMapping(context=ctxt, instance_uuid=inst.uuid, cell_mapping=cell,
                                    project_id=inst.project_id, user_id=inst.user_id).create()
            if s.get("updated_at"):
                stamps.append((inst.uuid, s["updated_at"]))
            print(inst.uuid, flush=True)
    set_updated(d, stamps)


def set_updated(d, stamps):
    """Backdate updated_at: a server stuck for hours, as a test wants it."""
    if not stamps:
        return
    c = sqlite3.connect(os.path.join(d, "nova_cell1.db"), timeout=30)
    for uuid, ts in stamps:
        c.execute("UPDATE instances SET updated_at = ? WHERE uuid = ?", (parse_time(ts).strftime("%Y-%m-%d %H:%M:%S.%f"), uuid))
    c.commit()
    c.close()


def update(d):
    changes = json.load(sys.stdin)
    ctxt, cell, objects, context = nova_env(d)
    stamps = []
    with context.target_cell(ctxt, cell) as cctxt:
        for ch in changes:
            inst = objects.Instance.get_by_uuid(cctxt, ch["id"])
            if ch.get("delete"):
                # As nova-compute deletes: the state first, then the row.
                inst.vm_state, inst.task_state = "deleted", None
                inst.save()
                inst.destroy()
                continue
            for field in ("vm_state", "task_state", "power_state", "host", "node", "display_name"):
                if field in ch:
                    setattr(inst, field, ch[field] if ch[field] != "" else None)
            if "host" in ch and "node" not in ch:
                inst.node = ch["host"] or None
            inst.save()
            if ch.get("updated_at"):
                stamps.append((inst.uuid, ch["updated_at"]))
    set_updated(d, stamps)


def service(d, host, state, reason=None):
    ctxt, cell, objects, context = nova_env(d)
    from oslo_utils import timeutils
    with context.target_cell(ctxt, cell) as cctxt:
        try:
            svc = objects.Service.get_by_args(cctxt, host, "nova-compute")
        except Exception:
            svc = objects.Service(context=cctxt, host=host, binary="nova-compute", topic="compute", report_count=1)
            svc.create()
        svc.disabled = state == "MAINTENANCE"
        svc.disabled_reason = (reason or "lab maintenance") if svc.disabled else None
        svc.forced_down = state == "DOWN"
        svc.last_seen_up = timeutils.utcnow()
        svc.save()
    try:
        objects.HostMapping.get_by_host(ctxt, host)
    except Exception:
        objects.HostMapping(context=ctxt, host=host, cell_mapping=cell).create()


def stop(d, by, uuids):
    """Stop servers and record it as Nova does.

    by "nova": as nova-compute's power sync when a guest stopped by itself
    (nova/compute/manager.py, _sync_instance_power_state ->
    _stop_unexpected_shutdown_instance -> compute_api.stop). The periodic
    task runs with context.get_admin_context(): no user, no project, so the
    instance action 'stop' carries user_id and project_id None. Any other
    value: a stop through the API by that user of the server's project.
    Then, as API and compute do: task_state powering-off and the action
    (compute_api.force_stop), the event compute_stop_instance around the
    power-off (wrap_instance_event), SHUTOFF.
    """
    ctxt, cell, objects, context = nova_env(d)
    from nova.compute import instance_actions, power_state, task_states, vm_states
    from nova.compute import utils as compute_utils
    for uuid in uuids:
        with context.target_cell(ctxt, cell) as cctxt:
            project = objects.Instance.get_by_uuid(cctxt, uuid).project_id
        actx = context.get_admin_context() if by == "nova" else context.RequestContext(user_id=by, project_id=project)
        with context.target_cell(actx, cell) as cctxt:
            inst = objects.Instance.get_by_uuid(cctxt, uuid)
            inst.task_state = task_states.POWERING_OFF
            inst.progress = 0
            inst.save(expected_task_state=[None])
            objects.InstanceAction.action_start(cctxt, inst.uuid, instance_actions.STOP, want_result=False)
            with compute_utils.EventReporter(cctxt, "compute_stop_instance", inst.host, inst.uuid):
                inst.power_state = power_state.SHUTDOWN
                inst.vm_state = vm_states.STOPPED
                inst.task_state = None
                inst.save(expected_task_state=[task_states.POWERING_OFF])


def action(d, uuid, name, by):
    """Record an instance action as the API does (_record_action_start)."""
    ctxt, cell, objects, context = nova_env(d)
    with context.target_cell(ctxt, cell) as cctxt:
        project = objects.Instance.get_by_uuid(cctxt, uuid).project_id
    actx = context.get_admin_context() if by == "nova" else context.RequestContext(user_id=by, project_id=project)
    with context.target_cell(actx, cell) as cctxt:
        objects.InstanceAction.action_start(cctxt, uuid, name, want_result=False)


def migrations(d):
    """Migration records through Nova's object layer, as conductor and
    compute write them; created_at/updated_at backdated when given."""
    items = json.load(sys.stdin)
    ctxt, cell, objects, context = nova_env(d)
    stamps = []
    with context.target_cell(ctxt, cell) as cctxt:
        for m in items:
            inst = objects.Instance.get_by_uuid(cctxt, m["instance_uuid"])
            mig = objects.Migration(context=cctxt, instance_uuid=inst.uuid,
                                    source_compute=m.get("source") or inst.host, source_node=m.get("source") or inst.node,
                                    dest_compute=m.get("dest"), dest_node=m.get("dest"),
                                    status=m["status"], migration_type=m.get("type") or "live-migration",
                                    old_instance_type_id=inst.instance_type_id, new_instance_type_id=inst.instance_type_id,
                                    user_id=inst.user_id, project_id=inst.project_id)
            mig.create()
            stamps.append((mig.uuid, m.get("created_at"), m.get("updated_at")))
            print(mig.uuid, flush=True)
    c = sqlite3.connect(os.path.join(d, "nova_cell1.db"), timeout=30)
    for u, created, updated in stamps:
        for col, ts in (("created_at", created), ("updated_at", updated or created)):
            if ts:
                c.execute(f"UPDATE migrations SET {col} = ? WHERE uuid = ?", (parse_time(ts).strftime("%Y-%m-%d %H:%M:%S.%f"), u))
    c.commit()
    c.close()


def helper():
    """Runs commands through Nova's object layer for as long as the lab
    lives, one JSON request a line ({"args": [...], "stdin": "..."}), one
    JSON reply a line ({"out": "...", "error": "..."}): Nova is imported
    once, not once per command."""
    requests = sys.stdin
    # Replies on a copy of fd 1; fd 1 itself goes to the log, so that
    # nothing else written there can garble a reply.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for line in requests:
        req = json.loads(line)
        sys.stdin, sys.stdout = io.StringIO(req.get("stdin") or ""), io.StringIO()
        try:
            run(req["args"][0], req["args"][1:])
            reply = {"out": sys.stdout.getvalue()}
        except BaseException:
            reply = {"out": sys.stdout.getvalue(), "error": traceback.format_exc()}
        finally:
            sys.stdin, sys.stdout = requests, sys.__stdout__
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


# What each kind of forkserver imports before it forks: everything its
# service imports at start (Keystone, Nova and Neutron must not share a
# process: Nova and Neutron patch eventlet, and their options collide).
def import_keystone():
    from keystone.server import wsgi  # noqa: F401


def import_nova():
    import eventlet
    eventlet.monkey_patch()
    import eventlet.wsgi  # noqa: F401
    from nova.api.openstack.compute import wsgi  # noqa: F401


def import_helper():
    os.environ["OS_NOVA_DISABLE_EVENTLET_PATCHING"] = "1"
    import nova.conf  # noqa: F401
    from nova import config, context, objects  # noqa: F401
    from nova.network import model  # noqa: F401
    from nova.compute import instance_actions, power_state, task_states, vm_states, utils  # noqa: F401
    objects.register_all()


PR_SET_PDEATHSIG = 1
CLONE_NEWNET = 0x40000000


def forkserver(kind):
    """Imports what the services of `kind` import, once, then starts each
    service of a request in a fork of itself: importing Keystone, Nova or
    Neutron costs about 4 CPU-seconds, every time a lab starts one, and a
    test process starts up to six labs. Requests on stdin, a JSON line each
    ({"args": [...], "log": path, "netns": name, "stdin": fifo, "stdout":
    fifo}); on stdout, "pid N" for each request, in order, and
    "exit N STATUS" when a service ends."""
    import ctypes
    import gc
    import select
    import signal
    # "none" imports nothing: the tests of the forkserver itself.
    {"keystone": import_keystone, "nova": import_nova, "neutron": import_neutron, "helper": import_helper,
     "none": lambda: None}[kind]()
    # eventlet (Nova, Neutron) patches os and select: this loop uses the
    # real ones, so that it never starts an eventlet hub a fork would share.
    if "eventlet" in sys.modules:
        from eventlet import patcher
        real_os, real_select = patcher.original("os"), patcher.original("select")
    else:
        real_os, real_select = os, select
    libc = ctypes.CDLL(None, use_errno=True)
    me = real_os.getpid()
    replies = real_os.fdopen(real_os.dup(1), "w")
    # Objects imported so far stay out of the collector's reach: a child's
    # collections would otherwise touch (and copy) every page of them.
    gc.freeze()
    pending = b""
    while True:
        while True:
            try:
                pid, status = real_os.waitpid(-1, real_os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            replies.write(f"exit {pid} {real_os.waitstatus_to_exitcode(status)}\n")
            replies.flush()
        ready, _, _ = real_select.select([0], [], [], 0.2)
        if not ready:
            continue
        chunk = real_os.read(0, 65536)
        if not chunk:
            return  # the test process went: its services die with us (PDEATHSIG)
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            req = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = real_os.fork()
            if pid == 0:
                code = 1
                try:
                    real_os.setsid()
                    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                    if real_os.getppid() != me:
                        real_os._exit(1)
                    log = real_os.open(req["log"], real_os.O_WRONLY | real_os.O_CREAT | real_os.O_APPEND, 0o644)
                    stdin = real_os.open(req.get("stdin") or "/dev/null", real_os.O_RDONLY)
                    stdout = real_os.open(req["stdout"], real_os.O_WRONLY) if req.get("stdout") else log
                    real_os.dup2(stdin, 0)
                    real_os.dup2(stdout, 1)
                    real_os.dup2(log, 2)
                    for fd in {log, stdin, stdout}:
                        real_os.close(fd)
                    replies.close()
                    if req.get("netns"):
                        fd = real_os.open("/run/netns/" + req["netns"], real_os.O_RDONLY)
                        if libc.setns(fd, CLONE_NEWNET) != 0:
                            raise OSError(ctypes.get_errno(), "setns " + req["netns"])
                        real_os.close(fd)
                    if "eventlet" in sys.modules:
                        import eventlet.hubs
                        eventlet.hubs.use_hub()
                    sys.argv = sys.argv[:1]
                    if req["args"][0] == "helper":
                        helper()
                    else:
                        run(req["args"][0], req["args"][1:])
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                    if not isinstance(e.code, int) and e.code is not None:
                        print(e.code, file=sys.stderr)
                except BaseException:
                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    real_os._exit(code)
            replies.write(f"pid {pid}\n")
            replies.flush()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    # oslo.config reads sys.argv when the services start: hide ours.
    sys.argv = sys.argv[:1]
    if cmd == "helper":
        helper()
    elif cmd == "forkserver":
        forkserver(args[0])
    else:
        run(cmd, args)


def run(cmd, args):
    if cmd == "init":
        init(args[0], args[1] if len(args) > 1 else "")
    elif cmd == "keystone":
        serve_keystone(args[0], args[1], args[2] if len(args) > 2 else None)
    elif cmd == "nova":
        serve_nova(args[0], args[1])
    elif cmd == "neutron":
        serve_neutron(args[0])
    elif cmd == "register":
        register(args[0])
        if len(args) > 1 and args[1]:
            save_template(args[0], args[1])
    elif cmd == "seed":
        seed(args[0])
    elif cmd == "update":
        update(args[0])
    elif cmd == "service":
        service(args[0], args[1], args[2], args[3] if len(args) > 3 else None)
    elif cmd == "stop":
        stop(args[0], args[1], args[2:])
    elif cmd == "action":
        action(args[0], args[1], args[2], args[3])
    elif cmd == "migrations":
        migrations(args[0])
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main()
