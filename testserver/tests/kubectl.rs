//! Fidelity suite: the real `kubectl` (v1.32) drives the `kube-testserver` binary, and every test checks
//! what kubectl prints or what the server stores afterwards (read back with `kubectl get -o json`).
//!
//! kubectl is required: when it is missing the tests fail with a message saying so, because a silently
//! skipped fidelity suite proves nothing.
//!
//! `KUBE_TESTSERVER_FIDELITY=real` runs the same checks against a real kube-apiserver (`fidelity/mod.rs`),
//! each test in a namespace of its own (the kubeconfig's context namespace).

mod fidelity;

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long any single kubectl invocation may take before the test fails.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// The kubectl binary on PATH, or a test failure explaining that it is required.
fn kubectl_binary() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("kubectl"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "kubectl was not found on PATH. This suite drives the real kubectl (v1.32) against \
                 kube-testserver and must not pass without it: install kubectl and re-run."
            )
        })
}

/// What one kubectl run produced.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// A `kube-testserver` child process (or, with `KUBE_TESTSERVER_FIDELITY=real`, a namespace of the real
/// cluster) plus an admin kubeconfig and a scratch directory.
struct Cluster {
    child: Option<Child>,
    dir: PathBuf,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    url: String,
    /// The namespace kubectl works in: `default` on the test server, the test's own on the real one.
    ns: String,
}

impl Cluster {
    /// Starts the binary on a free port and waits for its "listening on" line; on the real server,
    /// creates the test's namespace and a kubeconfig whose context uses it.
    fn start() -> Cluster {
        let kubectl = kubectl_binary();
        let dir = std::env::temp_dir().join(format!(
            "kubectl-fidelity-{}-{}",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        let kubeconfig = dir.join("kubeconfig");
        if fidelity::real() {
            return Cluster::real(kubectl, dir, kubeconfig);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_kube-testserver"))
            .args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
            .arg(&kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the kube-testserver binary");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("kube-testserver printed no \"listening on\" line within 30s");
            }
        };
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from kube-testserver: {line:?}"))
            .to_string();
        assert!(
            kubeconfig.is_file(),
            "kube-testserver did not write --kubeconfig-out {}",
            kubeconfig.display()
        );
        Cluster {
            child: Some(child),
            dir,
            kubeconfig,
            kubectl,
            url,
            ns: "default".into(),
        }
    }

    fn real(kubectl: PathBuf, dir: PathBuf, kubeconfig: PathBuf) -> Cluster {
        let admin = &fidelity::real_cluster().kubeconfig;
        let mut kc: Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(admin).expect("reading the real cluster's kubeconfig"),
        )
        .expect("the kubeconfig is YAML");
        let ns = fidelity::unique_namespace();
        for ctx in kc["contexts"]
            .as_array_mut()
            .expect("a kubeconfig has contexts")
        {
            ctx["context"]["namespace"] = json!(ns);
        }
        std::fs::write(&kubeconfig, serde_yaml_ng::to_string(&kc).unwrap())
            .expect("writing the test's kubeconfig");
        let url = kc["clusters"][0]["cluster"]["server"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let c = Cluster {
            child: None,
            dir,
            kubeconfig,
            kubectl,
            url,
            ns: ns.clone(),
        };
        assert_eq!(
            c.ok(&["create", "namespace", &ns]),
            format!("namespace/{ns} created\n")
        );
        c
    }

    fn is_real(&self) -> bool {
        self.child.is_none()
    }

    /// On the real server, waits until the deployment controller is done with Deployment `name`
    /// (`kubectl rollout status`, then no change for 1.5 s), so that what the test reads or writes next
    /// is not raced by its status writes. The test server has no controller: nothing to wait for.
    fn settle(&self, name: &str) {
        if !self.is_real() {
            return;
        }
        self.ok(&[
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=60s",
        ]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let rv = || self.get_json(&["deployment", name])["metadata"]["resourceVersion"].clone();
        let (mut last, mut since) = (rv(), Instant::now());
        while since.elapsed() < Duration::from_millis(1500) {
            assert!(Instant::now() < deadline, "deployment {name} kept changing");
            std::thread::sleep(Duration::from_millis(250));
            let now = rv();
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
    }

    /// Writes a file into the scratch directory and returns its path.
    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, contents).expect("writing a manifest");
        p
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            // A private discovery cache: every test's server has its own port and must be rediscovered.
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        c
    }

    /// Runs kubectl to completion (failing the test if it hangs).
    fn run(&self, args: &[&str]) -> Output {
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let out_path = self.dir.join(format!("out-{n}"));
        let err_path = self.dir.join(format!("err-{n}"));
        let mut child = self
            .command(args)
            .stdout(std::fs::File::create(&out_path).expect("creating a stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("creating a stderr file"))
            .spawn()
            .expect("running kubectl");
        let deadline = Instant::now() + KUBECTL_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("waiting for kubectl") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kubectl {args:?} did not finish within {KUBECTL_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Output {
            status,
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: without_skew_warning(&std::fs::read_to_string(&err_path).unwrap_or_default()),
        }
    }

    /// Runs kubectl, requires success and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            o.status,
            o.stdout,
            o.stderr
        );
        o.stdout
    }

    /// Runs kubectl, requires failure and returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "kubectl {args:?} should have failed but printed:\n{}",
            o.stdout
        );
        o.stderr
    }

    /// `kubectl get <args> -o json`, parsed.
    fn get_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.ok(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl {all:?} printed invalid JSON ({e}): {out}"))
    }

    /// Starts a long-running kubectl (e.g. `get -w`) whose stdout lines arrive on the returned channel.
    fn spawn_lines(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting kubectl");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `stderr` without kubectl's version-skew warning (kubectl 1.32 against a 1.37 server: "WARNING:
/// version difference between client (1.32) and server (1.37) exceeds the supported minor version
/// skew of +/-1"), which says nothing about the server's behaviour.
fn without_skew_warning(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("WARNING: version difference between client"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Waits for a line satisfying `pred`, returning it; fails with everything seen on timeout.
fn expect_line(rx: &mpsc::Receiver<String>, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no watch line {what} within 20s; saw {seen:#?}"),
        }
    }
}

/// Whitespace-separated columns of a table line.
fn cols(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A two-container Deployment manifest with `replicas` replicas.
fn deployment_yaml(replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: app
        image: nginx:1.25
      - name: sidecar
        image: busybox:1.36
"
    )
}

fn container_images(d: &Value) -> Vec<(String, String)> {
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("a deployment has containers")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["image"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// (manager, operation) of each managedFields entry of the main resource. Entries of the status
/// subresource are left out: on a real cluster the deployment controller writes status as
/// `kube-controller-manager`, whenever it gets to it.
fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| m["subresource"] != "status")
                .map(|m| {
                    (
                        m["manager"].as_str().unwrap_or_default().to_string(),
                        m["operation"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn binary_reports_its_url_and_writes_a_kubeconfig_for_it() {
    if fidelity::test_server_only("checks the kube-testserver binary and its version") {
        return;
    }
    let c = Cluster::start();
    assert!(c.url.starts_with("http://127.0.0.1:"), "{}", c.url);
    let port = c.url.rsplit(':').next().unwrap();
    let kc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&c.kubeconfig).unwrap())
        .expect("the kubeconfig is YAML");
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        json!(format!("https://127.0.0.1:{port}"))
    );
    let version = c.ok(&["version", "-o", "json"]);
    let v: Value = serde_json::from_str(&version).unwrap();
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.33.0");
}

#[test]
fn create_secret_and_configmap_store_what_kubectl_sent() {
    let c = Cluster::start();
    assert_eq!(
        c.ok(&[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=user=admin",
            "--from-literal=pass=s3cr3t"
        ]),
        "secret/creds created\n"
    );
    assert_eq!(
        c.ok(&[
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
            "--from-literal=level=3"
        ]),
        "configmap/settings created\n"
    );

    let s = c.get_json(&["secret", "creds"]);
    assert_eq!(s["kind"], "Secret");
    assert_eq!(s["type"], "Opaque");
    assert_eq!(
        s["data"],
        json!({ "user": b64("admin"), "pass": b64("s3cr3t") })
    );
    assert_eq!(s["metadata"]["namespace"], json!(c.ns));
    assert!(s["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(s["metadata"]["creationTimestamp"].is_string());

    let cm = c.get_json(&["configmap", "settings"]);
    assert_eq!(cm["data"], json!({ "mode": "fast", "level": "3" }));

    // Both appear in a list read back the way a user would.
    let names = c.ok(&["get", "secrets,configmaps", "-o", "name"]);
    assert!(names.contains("secret/creds\n"), "{names}");
    assert!(names.contains("configmap/settings\n"), "{names}");
}

#[test]
fn client_side_apply_creates_configures_and_leaves_unchanged() {
    let c = Cluster::start();
    let f2 = c.write("web2.yaml", &deployment_yaml(2));
    let f3 = c.write("web3.yaml", &deployment_yaml(3));
    let f2 = f2.to_str().unwrap();
    let f3 = f3.to_str().unwrap();

    assert_eq!(c.ok(&["apply", "-f", f2]), "deployment.apps/web created\n");
    let d = c.get_json(&["deployment", "web", "--show-managed-fields"]);
    let last = d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .expect("client-side apply records the last applied configuration");
    let last: Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["spec"]["replicas"], 2);
    assert_eq!(d["metadata"]["generation"], 1);
    assert!(
        managers(&d).contains(&("kubectl-client-side-apply".into(), "Update".into())),
        "{:?}",
        managers(&d)
    );

    assert_eq!(
        c.ok(&["apply", "-f", f2]),
        "deployment.apps/web unchanged\n"
    );
    assert_eq!(
        c.ok(&["apply", "-f", f3]),
        "deployment.apps/web configured\n"
    );
    let d = c.get_json(&["deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(
        container_images(&d),
        [
            ("app".to_string(), "nginx:1.25".to_string()),
            ("sidecar".to_string(), "busybox:1.36".to_string())
        ]
    );
}

#[test]
fn server_side_apply_owns_fields_and_reports_conflicts() {
    let c = Cluster::start();
    let f2 = c.write("web2.yaml", &deployment_yaml(2));
    let f3 = c.write("web3.yaml", &deployment_yaml(3));
    let f2 = f2.to_str().unwrap();
    let f3 = f3.to_str().unwrap();

    assert_eq!(
        c.ok(&["apply", "--server-side", "--field-manager=other", "-f", f2]),
        "deployment.apps/web serverside-applied\n"
    );
    let d = c.get_json(&["deployment", "web", "--show-managed-fields"]);
    assert_eq!(managers(&d), [("other".to_string(), "Apply".to_string())]);
    assert!(
        d["metadata"]["annotations"]
            .get("kubectl.kubernetes.io/last-applied-configuration")
            .is_none(),
        "server-side apply must not write the client-side annotation"
    );

    // A second manager changing a field "other" owns is refused without --force-conflicts.
    let err = c.fails(&["apply", "--server-side", "-f", f3]);
    assert!(
        err.contains(
            "error: Apply failed with 1 conflict: conflict with \"other\": .spec.replicas"
        ),
        "{err}"
    );
    assert!(
        err.contains("Please review the fields above--they currently have other managers"),
        "{err}"
    );
    assert_eq!(c.get_json(&["deployment", "web"])["spec"]["replicas"], 2);

    assert_eq!(
        c.ok(&["apply", "--server-side", "--force-conflicts", "-f", f3]),
        "deployment.apps/web serverside-applied\n"
    );
    let d = c.get_json(&["deployment", "web", "--show-managed-fields"]);
    assert_eq!(d["spec"]["replicas"], 3);
    let kubectl_entry = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "kubectl")
        .expect("kubectl now manages fields");
    assert_eq!(kubectl_entry["operation"], "Apply");
    assert!(kubectl_entry["fieldsV1"]["f:spec"]["f:replicas"].is_object());
    let other = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "other")
        .expect("other still manages the fields it was not forced off");
    assert!(
        other["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "forcing moves .spec.replicas away from \"other\": {other}"
    );
}

#[test]
fn get_deploy_prints_the_deployment_table_and_json() {
    let c = Cluster::start();
    let f = c.write("web.yaml", &deployment_yaml(2));
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    c.settle("web");

    let out = c.ok(&["get", "deploy"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        cols(lines[0]),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    // The cells print the stored status: none on the test server (no controller), 2/2 2 2 once a real
    // cluster's controller has rolled the pods out.
    let d = c.get_json(&["deployment", "web"]);
    let count = |f: &str| d["status"][f].as_i64().unwrap_or(0).to_string();
    let ready = format!("{}/2", count("readyReplicas"));
    let row = cols(lines[1]);
    assert_eq!(
        &row[..4],
        [
            "web",
            &ready,
            &count("updatedReplicas"),
            &count("availableReplicas")
        ],
        "{out}"
    );
    if !c.is_real() {
        assert_eq!(&row[..4], ["web", "0/2", "0", "0"], "{out}");
    }

    let list = c.get_json(&["deployments"]);
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["kind"], "Deployment");
    assert_eq!(list["items"][0]["apiVersion"], "apps/v1");
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
}

#[test]
fn get_wide_shows_containers_images_and_selector() {
    let c = Cluster::start();
    let f = c.write("web.yaml", &deployment_yaml(2));
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let wide = c.ok(&["get", "deployment", "web", "-o", "wide"]);
    let header = cols(wide.lines().next().unwrap());
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    let row = cols(wide.lines().nth(1).unwrap());
    assert_eq!(
        &row[5..],
        ["app,sidecar", "nginx:1.25,busybox:1.36", "app=web"]
    );
}

#[test]
fn api_resources_lists_deployments_with_their_short_name() {
    let c = Cluster::start();
    let out = c.ok(&["api-resources"]);
    let header = cols(out.lines().next().unwrap());
    assert_eq!(
        header,
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    let row = |name: &str| {
        out.lines()
            .map(cols)
            .find(|c| c.first() == Some(&name))
            .unwrap_or_else(|| panic!("api-resources has no {name} row:\n{out}"))
    };
    assert_eq!(
        row("deployments"),
        ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    );
    assert_eq!(row("secrets"), ["secrets", "v1", "true", "Secret"]);
    assert_eq!(
        row("configmaps"),
        ["configmaps", "cm", "v1", "true", "ConfigMap"]
    );
    assert_eq!(
        row("namespaces"),
        ["namespaces", "ns", "v1", "false", "Namespace"]
    );

    // The short name resolves through discovery.
    let f = c.write("web.yaml", &deployment_yaml(1));
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(
        c.ok(&["get", "deploy", "-o", "name"]),
        "deployment.apps/web\n"
    );
}

#[test]
fn get_watch_prints_a_line_for_each_change() {
    let c = Cluster::start();
    let (mut watch, rx) = c.spawn_lines(&[
        "get",
        "configmaps",
        "-l",
        "app=watched",
        "--watch",
        "--output-watch-events",
    ]);
    // A labelled sentinel created first: once kubectl prints it, its list is done and everything
    // below reaches it through the watch (w1 could otherwise show up in the initial list).
    c.ok(&["create", "configmap", "w0", "--from-literal=a=1"]);
    c.ok(&["label", "configmap", "w0", "app=watched"]);
    expect_line(&rx, "ADDED w0", |l| cols(l).starts_with(&["ADDED", "w0"]));

    c.ok(&[
        "create",
        "configmap",
        "w1",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    c.ok(&["label", "configmap", "w1", "app=watched"]);
    // Selector transition: becoming visible to the watch is an ADDED event.
    let added = expect_line(&rx, "ADDED w1", |l| cols(l).starts_with(&["ADDED", "w1"]));
    assert_eq!(cols(&added)[2], "2", "DATA column: {added}");

    c.ok(&[
        "patch",
        "configmap",
        "w1",
        "--type=merge",
        "-p",
        r#"{"data":{"c":"3"}}"#,
    ]);
    let modified = expect_line(&rx, "MODIFIED w1", |l| {
        cols(l).starts_with(&["MODIFIED", "w1"])
    });
    assert_eq!(cols(&modified)[2], "3", "DATA column: {modified}");

    c.ok(&["delete", "configmap", "w1"]);
    expect_line(&rx, "DELETED w1", |l| {
        cols(l).starts_with(&["DELETED", "w1"])
    });

    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn patch_merge_json_and_strategic_change_what_they_should() {
    let c = Cluster::start();
    let f = c.write("web.yaml", &deployment_yaml(2));
    c.ok(&["apply", "-f", f.to_str().unwrap()]);

    // Strategic merge keys containers by name: the sidecar survives.
    assert_eq!(
        c.ok(&[
            "patch",
            "deployment",
            "web",
            "--type=strategic",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:1.27"}]}}}}"#,
        ]),
        "deployment.apps/web patched\n"
    );
    let d = c.get_json(&["deployment", "web"]);
    assert_eq!(
        container_images(&d),
        [
            ("app".to_string(), "nginx:1.27".to_string()),
            ("sidecar".to_string(), "busybox:1.36".to_string())
        ]
    );
    assert_eq!(d["metadata"]["generation"], 2);

    // A JSON merge patch replaces lists wholesale.
    assert_eq!(
        c.ok(&[
            "patch",
            "deployment",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":4,"template":{"spec":{"containers":[{"name":"only","image":"alpine:3"}]}}}}"#,
        ]),
        "deployment.apps/web patched\n"
    );
    let d = c.get_json(&["deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(
        container_images(&d),
        [("only".to_string(), "alpine:3".to_string())]
    );

    // A JSON patch with a failing test operation changes nothing and says why.
    let err = c.fails(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":9},{"op":"replace","path":"/spec/replicas","value":1}]"#,
    ]);
    // 422 with empty details: kubectl's "request is invalid" form. kube-apiserver drops the patch
    // library's reason (NewGenericServerResponse keeps only its fixed text), so this is all it says.
    assert_eq!(
        err.trim_end(),
        "The request is invalid: the server rejected our request due to an error in our request"
    );
    assert_eq!(c.get_json(&["deployment", "web"])["spec"]["replicas"], 4);

    assert_eq!(
        c.ok(&[
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":1},{"op":"add","path":"/metadata/labels/tier","value":"fe"}]"#,
        ]),
        "deployment.apps/web patched\n"
    );
    c.settle("web");
    let d = c.get_json(&["deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["metadata"]["labels"]["tier"], "fe");
    let rv = d["metadata"]["resourceVersion"].clone();

    // Re-sending the same change is reported as no change and does not write.
    assert_eq!(
        c.ok(&[
            "patch",
            "deployment",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":1}}"#,
        ]),
        "deployment.apps/web patched (no change)\n"
    );
    assert_eq!(
        c.get_json(&["deployment", "web"])["metadata"]["resourceVersion"],
        rv
    );
}

#[test]
fn rollout_restart_stamps_the_template_and_bumps_generation() {
    let c = Cluster::start();
    let f = c.write("web.yaml", &deployment_yaml(2));
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let before = c.get_json(&["deployment", "web"]);
    let gen_before = before["metadata"]["generation"].as_i64().unwrap();

    assert_eq!(
        c.ok(&["rollout", "restart", "deployment/web"]),
        "deployment.apps/web restarted\n"
    );
    let after = c.get_json(&["deployment", "web"]);
    let stamp =
        after["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .as_str()
            .expect("the pod template carries kubectl.kubernetes.io/restartedAt");
    assert!(
        stamp.parse::<jiff::Timestamp>().is_ok(),
        "restartedAt is an RFC 3339 timestamp: {stamp}"
    );
    assert_eq!(after["metadata"]["generation"], gen_before + 1);
    // Nothing else in the template moved.
    assert_eq!(container_images(&after), container_images(&before));
}

#[test]
fn scale_label_and_annotate() {
    let c = Cluster::start();
    let f = c.write("web.yaml", &deployment_yaml(2));
    c.ok(&["apply", "-f", f.to_str().unwrap()]);

    assert_eq!(
        c.ok(&["scale", "deployment/web", "--replicas=5"]),
        "deployment.apps/web scaled\n"
    );
    let d = c.get_json(&["deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2);

    assert_eq!(
        c.ok(&["label", "deployment", "web", "tier=frontend"]),
        "deployment.apps/web labeled\n"
    );
    // A label change leaves the generation alone.
    assert_eq!(
        c.get_json(&["deployment", "web"])["metadata"]["generation"],
        2
    );
    assert_eq!(
        c.ok(&["annotate", "deployment", "web", "owner=team-a"]),
        "deployment.apps/web annotated\n"
    );
    let d = c.get_json(&["deployment", "web"]);
    assert_eq!(d["metadata"]["labels"]["tier"], "frontend");
    assert_eq!(d["metadata"]["annotations"]["owner"], "team-a");
    // An annotation change moves a Deployment's generation: kube-apiserver copies a Deployment's
    // annotations to its ReplicaSets, so it counts them as desired state.
    assert_eq!(d["metadata"]["generation"], 3);

    // Changing an existing label needs --overwrite, as on a real cluster.
    let err = c.fails(&["label", "deployment", "web", "tier=backend"]);
    assert!(
        err.contains("'tier' already has a value (frontend), and --overwrite is false"),
        "{err}"
    );
    assert_eq!(
        c.ok(&["label", "deployment", "web", "tier-"]),
        "deployment.apps/web unlabeled\n"
    );
    let d = c.get_json(&["deployment", "web"]);
    assert!(d["metadata"]["labels"].get("tier").is_none(), "{d}");
    assert_eq!(d["metadata"]["labels"]["app"], "web");

    // --current-replicas is a precondition checked against what the server returns.
    let err = c.fails(&[
        "scale",
        "deployment/web",
        "--current-replicas=3",
        "--replicas=1",
    ]);
    assert!(
        err.contains("Expected replicas to be 3, was 5"),
        "scale precondition error: {err}"
    );
}

#[test]
fn delete_and_missing_objects_print_not_found() {
    let c = Cluster::start();
    c.ok(&["create", "secret", "generic", "gone", "--from-literal=a=1"]);
    assert_eq!(
        c.ok(&["delete", "secret", "gone"]),
        "secret \"gone\" deleted\n"
    );

    let err = c.fails(&["get", "secret", "gone"]);
    assert_eq!(
        err.trim_end(),
        "Error from server (NotFound): secrets \"gone\" not found"
    );
    let err = c.fails(&["get", "secret", "nope"]);
    assert_eq!(
        err.trim_end(),
        "Error from server (NotFound): secrets \"nope\" not found"
    );
    let err = c.fails(&["delete", "configmap", "nope"]);
    assert_eq!(
        err.trim_end(),
        "Error from server (NotFound): configmaps \"nope\" not found"
    );
    let err = c.fails(&["get", "deployment", "nope"]);
    assert_eq!(
        err.trim_end(),
        "Error from server (NotFound): deployments.apps \"nope\" not found"
    );
    // --ignore-not-found turns it into silence.
    assert_eq!(
        c.ok(&["delete", "secret", "nope", "--ignore-not-found"]),
        ""
    );
}

#[test]
fn create_of_an_existing_name_is_already_exists() {
    let c = Cluster::start();
    let f = c.write(
        "s.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: dup\nstringData:\n  k: v\n",
    );
    let f = f.to_str().unwrap();
    assert_eq!(c.ok(&["create", "-f", f]), "secret/dup created\n");
    let err = c.fails(&["create", "-f", f]);
    assert_eq!(
        err.trim_end(),
        format!(
            "Error from server (AlreadyExists): error when creating \"{f}\": secrets \"dup\" already exists"
        )
    );
    let err = c.fails(&["create", "secret", "generic", "dup", "--from-literal=a=b"]);
    assert!(
        err.contains("secrets \"dup\" already exists"),
        "typed create error: {err}"
    );
    // The original content is untouched.
    assert_eq!(
        c.get_json(&["secret", "dup"])["data"],
        json!({ "k": b64("v") })
    );
}

#[test]
fn replace_with_a_stale_resource_version_is_a_conflict() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "cfg", "--from-literal=v=1"]);
    let mut stale = c.get_json(&["configmap", "cfg"]);
    c.ok(&["label", "configmap", "cfg", "bumped=yes"]);

    stale["data"]["v"] = json!("2");
    let f = c.write("stale.json", &stale.to_string());
    let f = f.to_str().unwrap();
    let err = c.fails(&["replace", "-f", f]);
    assert_eq!(
        err.trim_end(),
        format!(
            "Error from server (Conflict): error when replacing \"{f}\": Operation cannot be fulfilled on configmaps \"cfg\": the object has been modified; please apply your changes to the latest version and try again"
        )
    );
    assert_eq!(c.get_json(&["configmap", "cfg"])["data"]["v"], "1");

    // With the current resourceVersion the same replace goes through.
    let mut fresh = c.get_json(&["configmap", "cfg"]);
    fresh["data"]["v"] = json!("2");
    let f = c.write("fresh.json", &fresh.to_string());
    assert_eq!(
        c.ok(&["replace", "-f", f.to_str().unwrap()]),
        "configmap/cfg replaced\n"
    );
    let now = c.get_json(&["configmap", "cfg"]);
    assert_eq!(now["data"]["v"], "2");
    // replace stores the whole object sent: the fresh copy carried the label, so it stays.
    assert_eq!(now["metadata"]["labels"]["bumped"], "yes", "{now}");
}

#[test]
fn field_and_label_selectors_filter_lists() {
    let c = Cluster::start();
    c.ok(&[
        "create",
        "secret",
        "generic",
        "plain-a",
        "--from-literal=k=v",
    ]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "plain-b",
        "--from-literal=k=v",
    ]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "custom",
        "--type=example.com/custom",
        "--from-literal=k=v",
    ]);
    c.ok(&["label", "secret", "plain-a", "app=web", "env=prod"]);
    c.ok(&["label", "secret", "plain-b", "app=db", "env=dev"]);
    c.ok(&["label", "secret", "custom", "app=web"]);

    let names = |args: &[&str]| {
        let mut all = vec!["get", "secrets", "-o", "name"];
        all.extend_from_slice(args);
        let out = c.ok(&all);
        out.lines().map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(
        names(&["--field-selector", "type=Opaque"]),
        ["secret/plain-a", "secret/plain-b"]
    );
    assert_eq!(
        names(&["--field-selector", "type!=Opaque"]),
        ["secret/custom"]
    );
    assert_eq!(
        names(&["--field-selector", "metadata.name=plain-b"]),
        ["secret/plain-b"]
    );
    assert_eq!(
        names(&["-l", "app=web"]),
        ["secret/custom", "secret/plain-a"]
    );
    assert_eq!(names(&["-l", "app=web,env=prod"]), ["secret/plain-a"]);
    assert_eq!(
        names(&["-l", "env in (prod,dev)"]),
        ["secret/plain-a", "secret/plain-b"]
    );
    assert_eq!(names(&["-l", "!env"]), ["secret/custom"]);
    assert_eq!(
        names(&["-l", "app=web", "--field-selector", "type=Opaque"]),
        ["secret/plain-a"]
    );

    let err = c.fails(&["get", "secrets", "--field-selector", "data.k=v"]);
    assert!(
        err.contains("field label not supported: data.k"),
        "unsupported field selector: {err}"
    );
    // An empty result says so on stderr, like a real cluster.
    let o = c.run(&["get", "secrets", "-l", "app=none"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, "");
    assert_eq!(
        o.stderr.trim_end(),
        format!("No resources found in {} namespace.", c.ns)
    );
}

#[test]
fn events_k8s_io_event_shows_in_get_events_and_describe_deployment() {
    let c = Cluster::start();
    // No replicas: a real cluster's controllers then record no Events of their own (scaling,
    // scheduling), and the one below is the only one.
    let f = c.write("web.yaml", &deployment_yaml(0));
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let deploy = c.get_json(&["deployment", "web"]);
    let uid = deploy["metadata"]["uid"]
        .as_str()
        .expect("a stored Deployment has a uid");

    // A controller-style Event: the new API's field names, a MicroTime eventTime and no deprecated fields.
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S");
    let event = format!(
        "apiVersion: events.k8s.io/v1
kind: Event
metadata:
  name: web.reloaded
regarding:
  apiVersion: apps/v1
  kind: Deployment
  name: web
  namespace: {ns}
  uid: {uid}
reason: Reloaded
type: Normal
action: Reload
note: Secret db-creds changed, rolled the pod template
eventTime: \"{now}.000000Z\"
reportingController: hashroll.dev/hashroll
reportingInstance: hashroll-0
",
        ns = c.ns
    );
    let f = c.write("event.yaml", &event);
    let out = c.ok(&["create", "-f", f.to_str().unwrap()]);
    assert_eq!(out.trim_end(), "event.events.k8s.io/web.reloaded created");

    let out = c.ok(&["get", "events"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "one header and one event row: {out}");
    assert_eq!(
        cols(lines[0]),
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{out}"
    );
    // Columns start where their headers do; the message keeps its spaces and commas.
    let at = |h: &str| lines[0].find(h).expect("header present");
    let cell = |from: &str, to: Option<&str>| {
        let end = to.map_or(lines[1].len(), at);
        lines[1][at(from)..end].trim().to_string()
    };
    assert!(
        cell("LAST SEEN", Some("TYPE")).ends_with('s'),
        "an age in seconds: {out}"
    );
    assert_eq!(cell("TYPE", Some("REASON")), "Normal", "{out}");
    assert_eq!(cell("REASON", Some("OBJECT")), "Reloaded", "{out}");
    assert_eq!(cell("OBJECT", Some("MESSAGE")), "deployment/web", "{out}");
    assert_eq!(
        cell("MESSAGE", None),
        "Secret db-creds changed, rolled the pod template",
        "{out}"
    );

    let out = c.ok(&["describe", "deployment", "web"]);
    let events = out
        .split_once("\nEvents:")
        .unwrap_or_else(|| panic!("describe has an Events section: {out}"))
        .1;
    let rows: Vec<&str> = events.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        cols(rows[0]),
        ["Type", "Reason", "Age", "From", "Message"],
        "{events}"
    );
    assert_eq!(rows.len(), 3, "header, rule and one event: {events}");
    let row = cols(rows[2]);
    assert_eq!(&row[..2], ["Normal", "Reloaded"], "{events}");
    assert!(row[2].ends_with('s'), "Age from eventTime: {events}");
    // kubectl shows source.component, falling back to reportingController (not the instance).
    assert_eq!(row[3], "hashroll.dev/hashroll", "{events}");
    assert_eq!(
        row[4..].join(" "),
        "Secret db-creds changed, rolled the pod template",
        "{events}"
    );
}
