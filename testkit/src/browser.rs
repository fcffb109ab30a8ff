//! A headless Chromium (Debian's `chromium`, or `$CHROMIUM`) driven over the DevTools protocol
//! on a pipe: with `--remote-debugging-pipe` the browser reads NUL-terminated JSON commands on
//! fd 3 and writes replies and events on fd 4, which a shell maps to its stdin and stdout. No
//! CDP crate, no port. The page runs in real time (unlike `--virtual-time-budget`, which
//! stops the clock while an event stream is open), so a test can watch it change.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, ChildStdout, Command},
};

/// How long one DevTools command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The headless browser; killed on drop.
pub struct Browser {
    child: Child,
    commands: ChildStdin,
    replies: BufReader<ChildStdout>,
    next_id: u64,
    profile: PathBuf,
}

/// One tab, attached in flat mode (commands carry its session id).
pub struct Tab {
    session: String,
}

/// The Chromium binary: `$CHROMIUM`, else `chromium` (installed by scripts/ensure-chromium.sh,
/// which `make test` runs).
pub fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

impl Browser {
    /// Starts a headless Chromium with a fresh profile.
    pub async fn launch() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let profile = std::env::temp_dir().join(format!(
            "logstream-chromium-{}-{nanos:x}",
            std::process::id()
        ));
        let script = "exec \"$0\" --headless --no-sandbox --disable-gpu --disable-background-networking \
             --disable-dev-shm-usage --no-first-run --remote-debugging-pipe \
             --user-data-dir=\"$1\" about:blank 3<&0 4>&1 0</dev/null 1>/dev/null";
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg(chromium())
            .arg(&profile)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start bash for chromium");
        let commands = child.stdin.take().expect("piped stdin");
        let replies = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut browser = Self {
            child,
            commands,
            replies,
            next_id: 1,
            profile,
        };
        let version = browser.command(None, "Browser.getVersion", json!({})).await;
        assert!(
            version["product"].is_string(),
            "{} did not answer the DevTools protocol (run scripts/ensure-chromium.sh): {version}",
            chromium()
        );
        browser
    }

    /// Sends one command (to `tab`, or to the browser) and returns its result; events that
    /// arrive meanwhile are skipped.
    pub async fn command(&mut self, tab: Option<&Tab>, method: &str, params: Value) -> Value {
        let reply = self.try_command(tab, method, params).await;
        assert!(reply.get("error").is_none(), "{method} failed: {reply}");
        reply["result"].clone()
    }

    /// Sends one command and returns the whole reply, `error` included.
    async fn try_command(&mut self, tab: Option<&Tab>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(tab) = tab {
            message["sessionId"] = json!(tab.session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        let exchange = async {
            self.commands.write_all(&bytes).await?;
            self.commands.flush().await?;
            loop {
                let mut reply = Vec::new();
                if self.replies.read_until(0, &mut reply).await? == 0 {
                    return Err(std::io::Error::other("chromium closed its DevTools pipe"));
                }
                reply.pop();
                let reply: Value = serde_json::from_slice(&reply)?;
                if reply["id"] == json!(id) {
                    return Ok(reply);
                }
            }
        };
        tokio::time::timeout(COMMAND_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| panic!("chromium did not answer {method} in {COMMAND_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("failed to send {method} to chromium: {e}"))
    }

    /// Opens `url` in a new tab of `width` × `height` CSS pixels.
    pub async fn open(&mut self, url: &str, width: u32, height: u32) -> Tab {
        let target = self
            .command(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = self
            .command(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        let tab = Tab {
            session: attached["sessionId"].as_str().unwrap().to_owned(),
        };
        self.command(
            Some(&tab),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        self.command(Some(&tab), "Page.navigate", json!({ "url": url }))
            .await;
        // Until the new document has loaded, evaluations may land in the old one or in none.
        let loaded = format!(
            "location.href === {} && document.readyState === 'complete'",
            json!(url)
        );
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        loop {
            let reply = self
                .try_command(
                    Some(&tab),
                    "Runtime.evaluate",
                    json!({ "expression": loaded, "returnByValue": true }),
                )
                .await;
            if reply["result"]["result"]["value"] == json!(true) {
                return tab;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{url} did not load: {reply}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Evaluates `expression` in `tab` and returns its value (JSON-serializable results).
    pub async fn eval(&mut self, tab: &Tab, expression: &str) -> Value {
        let result = self
            .command(
                Some(tab),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression} threw: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Without reloading, evaluates `read` (an object with the page's `decisions`) every `poll`
    /// until a decision that came over the event stream (`source: "live"`) is shown and the
    /// value at `moving` has taken three different values, the first being `first`; panics
    /// after `timeout`. Returns the last reading and the values `moving` took.
    pub async fn until_live_decision(
        &mut self,
        tab: &Tab,
        read: &str,
        moving: &str,
        first: Value,
        timeout: Duration,
        poll: Duration,
    ) -> (Value, Vec<Value>) {
        let mut readings = vec![first];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let shown = self.eval(tab, read).await;
            if readings.last() != Some(&shown[moving]) {
                readings.push(shown[moving].clone());
            }
            let live_decision = shown["decisions"]
                .as_array()
                .is_some_and(|all| all.iter().any(|d| d["source"] == "live"));
            if live_decision && readings.len() >= 3 {
                return (shown, readings);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no live decision and moving numbers within {} s: {readings:?} {shown}",
                timeout.as_secs()
            );
            tokio::time::sleep(poll).await;
        }
    }

    /// The tab's DOM as HTML.
    pub async fn dom(&mut self, tab: &Tab) -> String {
        let html = self.eval(tab, "document.documentElement.outerHTML").await;
        html.as_str().unwrap_or_default().to_owned()
    }

    /// Saves a PNG screenshot of `tab` to `path`.
    pub async fn screenshot(&mut self, tab: &Tab, path: &Path) {
        let shot = self
            .command(
                Some(tab),
                "Page.captureScreenshot",
                json!({ "format": "png" }),
            )
            .await;
        let png = decode_base64(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Decodes standard base64 (what DevTools sends screenshots in).
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// Where tests leave artefacts for people (screenshots): `<target dir>/test-artifacts`.
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("test-artifacts")
}
