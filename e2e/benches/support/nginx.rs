//! nginx from apt, configured here: a static 1 kB upstream, and a reverse proxy to it with a
//! keepalive upstream pool. One worker each, no daemon, access log off, every path (pid, logs,
//! temp dirs) under the instance's own directory, running as the current user.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::procs::{Proc, children, run_output};

/// The response body size of the upstream.
pub const BODY_BYTES: usize = 1024;

/// A running nginx (master + one worker).
pub struct Nginx {
    pub proc: Proc,
}

impl Nginx {
    /// The master and its workers.
    pub fn pids(&self) -> Vec<i32> {
        let mut p = vec![self.proc.pid()];
        p.extend(children(self.proc.pid()));
        p
    }
}

/// `user` line: only meaningful (and only accepted) when the master runs as root; keeps the
/// worker on the current user instead of `nobody`.
fn user_line() -> String {
    let uid = run_output(Command::new("id").arg("-u"));
    if uid.trim() != "0" {
        return String::new();
    }
    let user = run_output(Command::new("id").arg("-un"));
    let group = run_output(Command::new("id").arg("-gn"));
    format!("user {} {};\n", user.trim(), group.trim())
}

fn common(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "{user}worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n",
        user = user_line()
    )
}

fn http_common(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "access_log off;\n  client_body_temp_path {d}/client_body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         keepalive_requests 10000000;\n  keepalive_timeout 300s;\n"
    )
}

/// nginx.conf of the static upstream: every path answers the same 1 kB file.
pub fn upstream_conf(dir: &Path, addr: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "{}http {{\n  {}  default_type application/octet-stream;\n  open_file_cache max=16;\n  \
         server {{\n    listen {addr};\n    location / {{ root {d}/www; try_files /body =404; }}\n  }}\n}}\n",
        common(dir),
        http_common(dir),
    )
}

/// nginx.conf of the reverse proxy to `upstream`.
pub fn proxy_conf(dir: &Path, addr: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "{}http {{\n  {}  upstream backend {{\n    server {upstream};\n    keepalive 32;\n  }}\n  \
         server {{\n    listen {addr};\n    location / {{\n      proxy_pass http://backend;\n      \
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        common(dir),
        http_common(dir),
    )
}

/// Writes `conf` into `dir/nginx.conf` and starts nginx on it, waiting for `addr` to accept.
pub fn start(name: &str, dir: &Path, addr: SocketAddr, conf: &str) -> Nginx {
    std::fs::create_dir_all(dir.join("www")).expect("nginx dir");
    std::fs::write(dir.join("www/body"), vec![b'x'; BODY_BYTES]).expect("body file");
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("nginx.conf");
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf_path);
    let mut proc = Proc::spawn(name, cmd, &dir.join("stderr.log"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        proc.check_running(&dir.join("error.log"));
        assert!(Instant::now() < deadline, "{name} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx { proc }
}
