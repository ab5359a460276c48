//! A real ZooKeeper for the tests (Debian's `zookeeper` package, which
//! `.ci/run` installs): standalone, on 127.0.0.1 and a free port, with a
//! temporary data dir; stopped when dropped. `stop` and `start` keep the
//! port and the data, as an operator's restart would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's package puts the server's jar.
const JAR: &str = "/usr/share/java/zookeeper.jar";

pub struct ZooKeeper {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

impl ZooKeeper {
    /// Starts a ZooKeeper whose sessions may be as short as 1 s. Panics with
    /// the fix when the package is missing (tests that need it fail, never skip).
    pub fn start() -> ZooKeeper {
        assert!(
            std::path::Path::new(JAR).exists(),
            "{JAR} is missing: apt-get install zookeeper (.ci/run does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let cfg = format!(
            "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             admin.enableServer=false\nminSessionTimeout=1000\nmaxSessionTimeout=30000\n\
             4lw.commands.whitelist=ruok,srvr,cons\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("zoo.cfg"), cfg).expect("zoo.cfg");
        let mut zk = ZooKeeper {
            port,
            dir,
            child: None,
        };
        zk.resume();
        zk
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `zk://127.0.0.1:<port>/<chroot>`.
    pub fn url(&self, chroot: &str) -> String {
        format!("zk://{}/{}", self.address(), chroot.trim_start_matches('/'))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }

    /// Starts the server again after `stop`, on the same port and data.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "ZooKeeper is already running");
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let child = Command::new("java")
            .arg("-cp")
            .arg(JAR)
            .arg("-Xmx256m")
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.dir.path().join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("java (apt-get install zookeeper brings it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ruok() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "ZooKeeper exited with {status}:\n{}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "ZooKeeper did not answer ruok within 60 s:\n{}",
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the server answers the `ruok` four-letter word.
    pub fn ruok(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(500),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"ruok").is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer == "imok"
    }

    /// Drops the data of a stopped server: the next `resume` starts an empty
    /// ZooKeeper that knows none of the old sessions (they then expire).
    pub fn forget(&mut self) {
        assert!(
            self.child.is_none(),
            "stop ZooKeeper before forgetting its data"
        );
        let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
    }

    /// Stops the server (SIGKILL: no goodbye to the sessions).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}
