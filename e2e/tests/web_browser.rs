//! The web view in a real browser: nats-server, ingest, the processors, alerts and
//! `citypulse-web` as processes; a pollution episode published as a device would publish it;
//! headless Chromium driven over the DevTools protocol.
//!
//! The polluted district's element must show the AQI value and category of the latest
//! `metrics.air.<district>` message in METRICS; the alert must appear in the feed; pressing
//! "Acknowledge" must make `citypulse-alerts list` report it acknowledged. A screenshot is saved
//! as `target/citypulse-web.png`. Without Chromium the test fails (scripts/install-deps installs
//! Debian's `chromium`; CHROMIUM_BIN overrides the binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream;
use async_nats::HeaderMap;
use citypulse_e2e::pipeline::{Pipeline, PipelineOptions};
use citypulse_harness::{free_port, http_get};
use citypulse_runtime::stream_config::{self, Limits};
use citypulse_schema::{streams, Air, Measurement, Reading, WindowMetrics, WindowResult};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DISTRICT: &str = "d04";
const STATION: &str = "aq-d04-episode";
const MINUTE: u64 = 60_000;

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    if dir.ends_with("deps") {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// A child process killed on drop.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `f` gives `Some`, polling every 200 ms, or panics with `what` and the last value.
fn poll<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let end = Instant::now() + deadline;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= end => {
                panic!("{what}: not within {deadline:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn start_web(nats_url: &str, log: &Path, extra: &[&str]) -> (Kill, SocketAddr, SocketAddr) {
    let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(bin_dir().join("citypulse-web"))
        .args(["--nats-url", nats_url, "--listen", &web.to_string()])
        .args([
            "--metrics-addr",
            &admin.to_string(),
            "--active-refresh",
            "1s",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("starting citypulse-web: build it with `cargo build --workspace --bins`");
    let kill = Kill(child);
    poll(
        Duration::from_secs(30),
        "citypulse-web healthy",
        || match http_get(admin, "/healthz") {
            Ok((200, _)) => Ok(()),
            other => Err(format!(
                "{other:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )),
        },
    );
    (kill, web, admin)
}

/// Cleaner air in the other districts for the last three hours (so the map has colours), PM2.5
/// from 2 to 35 µg/m³ depending on the district.
fn background(now_ms: u64) -> Vec<Reading> {
    let start = (now_ms - 180 * MINUTE) / MINUTE * MINUTE;
    let mut out = Vec::new();
    for d in (1..=12u64).filter(|d| format!("d{d:02}") != DISTRICT) {
        for i in 0..180u64 {
            let pm25 = 2.0 + (d * 7 % 12) as f64 * 4.0;
            out.push(Reading {
                sensor: format!("aq-d{d:02}-bg"),
                district: format!("d{d:02}"),
                ts: start + i * MINUTE + 7_000,
                seq: i + 1,
                data: Measurement::Air(Air {
                    pm25_ugm3: Some(pm25),
                    no2_ppb: Some(10.0 + d as f64),
                    ..Air::default()
                }),
            });
        }
    }
    out
}

/// A pollution episode at one station: three hours of one reading a minute, clean air for the
/// first half hour, then PM2.5 at 150 µg/m³ (AQI "Unhealthy" and above once the NowCast rises).
fn episode(now_ms: u64) -> Vec<Reading> {
    let start = (now_ms - 3 * 60 * MINUTE) / MINUTE * MINUTE;
    (0..180u64)
        .map(|i| {
            let polluted = i >= 30;
            let pm25 = if polluted {
                150.0 + (i % 7) as f64
            } else {
                6.0
            };
            Reading {
                sensor: STATION.to_owned(),
                district: DISTRICT.to_owned(),
                ts: start + i * MINUTE + 5_000,
                seq: i + 1,
                data: Measurement::Air(Air {
                    pm25_ugm3: Some(pm25),
                    pm10_ugm3: Some(pm25 * 1.5),
                    no2_ppb: Some(20.0),
                    ..Air::default()
                }),
            }
        })
        .collect()
}

async fn publish_as_device(js: &jetstream::Context, readings: &[Reading]) {
    for r in readings {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", r.msg_id().as_str());
        js.publish_with_headers(r.claimed_subject(), headers, r.encode().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// The AQI and category of the latest `metrics.air.<district>` message.
async fn latest_air(js: &jetstream::Context) -> Option<(u16, String)> {
    let stream = js.get_stream(streams::METRICS).await.ok()?;
    let m = stream
        .get_last_raw_message_by_subject(&format!("metrics.air.{DISTRICT}"))
        .await
        .ok()?;
    let w = WindowResult::decode(&m.payload).ok()?;
    match w.metrics {
        WindowMetrics::Air(a) => Some((a.aqi?, a.category?.to_string())),
        WindowMetrics::Traffic(_) => None,
    }
}

/// Headless Chromium with its DevTools websocket.
struct Browser {
    _child: Kill,
    ws: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let bin = std::env::var_os("CHROMIUM_BIN").map_or_else(|| "chromium".into(), PathBuf::from);
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(&bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .args([
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--window-size=1400,1250", "about:blank"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {}: {e}. The browser test needs Chromium: run scripts/install-deps \
                     (Debian's `chromium`) or set CHROMIUM_BIN",
                    bin.display()
                )
            });
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let browser_ws = loop {
            let line = lines
                .next()
                .expect("chromium exited before printing its DevTools address")
                .unwrap();
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                break url.trim().to_owned();
            }
        };
        // Keep draining stderr so Chromium never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let kill = Kill(child);
        let host = browser_ws
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let addr: SocketAddr = host.parse().unwrap();
        // The browser's own socket lists the targets; the page has a socket of its own.
        let mut browser = Browser::connect(addr, &browser_ws, kill, profile);
        let targets = browser.call("Target.getTargets", json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["targetId"].as_str())
            .expect("a page target")
            .to_owned();
        let Browser {
            _child, _profile, ..
        } = browser;
        Browser::connect(
            addr,
            &format!("ws://{addr}/devtools/page/{page}"),
            _child,
            _profile,
        )
    }

    fn connect(addr: SocketAddr, url: &str, child: Kill, profile: tempfile::TempDir) -> Browser {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (ws, _) = tungstenite::client::client(url, stream).unwrap();
        Browser {
            _child: child,
            ws,
            next_id: 0,
            _profile: profile,
        }
    }
    /// One DevTools command; its `result`.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(tungstenite::Message::text(msg)).unwrap();
        loop {
            let m = self.ws.read().unwrap();
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; its JSON value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        r["result"]["value"].clone()
    }
}

fn alerts_list(nats_url: &str) -> Value {
    let out = Command::new(bin_dir().join("citypulse-alerts"))
        .args(["list", "--json", "--nats-url", nats_url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn screenshot(browser: &mut Browser) -> PathBuf {
    use base64::Engine as _;
    let shot = browser.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let path = bin_dir().parent().unwrap().join("citypulse-web.png");
    std::fs::write(&path, png).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_episode_and_acknowledges_its_alert() {
    let pipeline = Pipeline::launch(PipelineOptions {
        simulator: None,
        ..PipelineOptions::default()
    });
    let url = pipeline.url();
    let logs = tempfile::tempdir().unwrap();
    let (_web, web, admin) = start_web(&url, &logs.path().join("web.log"), &[]);
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // In time order, as a fleet of devices delivers them: the processors' watermark is per
    // partition, and a district published after another one of its partition would be late.
    let mut readings = background(now);
    readings.extend(episode(now));
    readings.sort_by_key(|r| r.ts);
    publish_as_device(&js, &readings).await;

    let mut browser = Browser::start();
    browser.call("Page.enable", json!({}));
    browser.call("Page.navigate", json!({"url": format!("http://{web}/")}));

    // The district shows what the latest METRICS message for it carries.
    let mut last_air = None;
    let shown = poll(
        Duration::from_secs(120),
        "the district shows the latest AQI",
        || {
            let latest = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(latest_air(&js))
            });
            let dom = browser.eval(&format!(
                "(() => {{ const g = document.getElementById('district-{DISTRICT}');
               return g && {{aqi: g.dataset.aqi, category: g.dataset.aqiCategory,
                 value: document.getElementById('value-{DISTRICT}').textContent,
                 label: document.getElementById('category-{DISTRICT}').textContent,
                 fill: g.querySelector('rect').getAttribute('fill')}}; }})()"
            ));
            last_air.clone_from(&latest);
            match &latest {
                Some((aqi, cat))
                    if *aqi > 150
                        && dom["aqi"].as_str() == Some(aqi.to_string().as_str())
                        && dom["category"] == *cat =>
                {
                    Ok(dom)
                }
                _ => Err(format!("METRICS {latest:?}, page {dom}")),
            }
        },
    );
    let (aqi, category) = last_air.unwrap();
    let label = match category.as_str() {
        "unhealthy" => "Unhealthy",
        "very_unhealthy" => "Very Unhealthy",
        "hazardous" => "Hazardous",
        other => panic!("an episode at 150 µg/m³ is not {other}"),
    };
    assert_eq!(shown["value"], aqi.to_string(), "{shown}");
    assert_eq!(shown["label"], label, "{shown}");
    // EPA's colour of the category (TAD 2024, Table 2).
    let fill = match category.as_str() {
        "unhealthy" => "#ff0000",
        "very_unhealthy" => "#8f3f97",
        _ => "#7e0023",
    };
    assert_eq!(shown["fill"], fill);

    // The alert appears in the feed.
    let alert_id = poll(
        Duration::from_secs(120),
        "the AQI alert in the feed",
        || {
            let v = browser.eval(&format!(
                "(() => {{ const li = [...document.querySelectorAll('#active-alerts li.alert')]
                 .find(l => l.textContent.includes('{DISTRICT}'));
               return li ? li.dataset.id : null; }})()"
            ));
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| "no alert yet".to_owned())
        },
    );
    let transitions =
        browser.eval("document.querySelectorAll('#transitions li.transition').length");
    assert!(transitions.as_u64().unwrap() >= 1, "{transitions}");

    // Acknowledge from the page; the alerts service records it.
    let clicked = browser.eval(&format!(
        "(() => {{ const b = document.querySelector('#active-alerts li.alert[data-id=\"{alert_id}\"] button.ack');
           if (!b) return false; b.click(); return true; }})()"
    ));
    assert_eq!(clicked, true);
    poll(
        Duration::from_secs(30),
        "the alert acknowledged in `citypulse-alerts list`",
        || {
            let list = alerts_list(&url);
            let a = list["alerts"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["id"] == alert_id.as_str()).cloned());
            match a {
                Some(a) if a["ack"]["by"] == "web-operator" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    poll(
        Duration::from_secs(10),
        "the page shows the acknowledgement",
        || {
            let v = browser.eval(&format!(
            "document.querySelector('#active-alerts li.alert[data-id=\"{alert_id}\"]')?.dataset.acked"
        ));
            (v == "true").then_some(()).ok_or(v.to_string())
        },
    );

    // Silence from the page: the alerts service holds a silence for the alert's rule and
    // district.
    let clicked = browser.eval(&format!(
        "(() => {{ const b = document.querySelector('#active-alerts li.alert[data-id=\"{alert_id}\"] button.silence');
           if (!b) return false; b.click(); return true; }})()"
    ));
    assert_eq!(clicked, true);
    poll(
        Duration::from_secs(30),
        "a silence in `citypulse-alerts list`",
        || {
            let list = alerts_list(&url);
            let found = list["silences"].as_array().into_iter().flatten().any(|s| {
                s["matcher"]["district"] == DISTRICT
                    && s["matcher"]["rule"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("aqi"))
                    && s["by"] == "web-operator"
            });
            found.then_some(()).ok_or(list["silences"].to_string())
        },
    );

    // The district panel: click the district, see its charts.
    browser.eval(&format!(
        "document.getElementById('district-{DISTRICT}').dispatchEvent(new MouseEvent('click', {{bubbles: true}}))"
    ));
    poll(
        Duration::from_secs(10),
        "the district panel with an AQI chart",
        || {
            let n = browser.eval("document.querySelectorAll('#panel-charts polyline').length");
            (n.as_u64().unwrap_or(0) >= 2)
                .then_some(())
                .ok_or(n.to_string())
        },
    );
    // Every district got its figures (the screenshot shows the whole city).
    poll(Duration::from_secs(60), "an AQI on every district", || {
        let n = browser.eval("document.querySelectorAll('.district[data-aqi]').length");
        (n == 12).then_some(()).ok_or(n.to_string())
    });
    let path = screenshot(&mut browser);
    eprintln!("screenshot: {}", path.display());

    // The server counted its browser and the relayed acknowledgement.
    let (_, metrics) = http_get(admin, "/metrics").unwrap();
    assert!(
        metrics.contains("citypulse_web_api_requests_total{op=\"ack\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("citypulse_web_clients 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100000_sensor_city_renders_aggregated_without_freezing() {
    let nats = citypulse_harness::NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(stream_config::metrics(Limits::METRICS))
        .await
        .unwrap();
    js.create_stream(stream_config::alerts(Limits::ALERTS))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The built-in city at 100,000 sensors, as `citypulse-simulator --sensors 100000` runs it.
    let (_web, web, _) = start_web(
        &nats.url(),
        &dir.path().join("web.log"),
        &["--sensors", "100000"],
    );
    // One district result per district, as the processors publish them.
    for d in 1..=12u16 {
        let w = WindowResult {
            window_start: 0,
            window_end: 60_000,
            district: format!("d{d:02}"),
            sensor: None,
            readings: 1,
            sensors: 1,
            metrics: WindowMetrics::Air(Box::new(citypulse_schema::AirMetrics {
                aqi: Some(d * 20),
                category: Some(citypulse_schema::AqiCategory::of(d * 20)),
                ..Default::default()
            })),
        };
        js.publish(w.subject(), w.encode().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let mut browser = Browser::start();
    browser.call("Page.enable", json!({}));
    let started = Instant::now();
    browser.call("Page.navigate", json!({"url": format!("http://{web}/")}));
    poll(
        Duration::from_secs(20),
        "12 districts with their AQI",
        || {
            let n = browser.eval("document.querySelectorAll('.district[data-aqi]').length");
            (n == 12).then_some(()).ok_or(n.to_string())
        },
    );
    let loaded = started.elapsed();
    // Drawn aggregated: at most 6 corridors of 8 segments and 8 stations per district, the rest
    // counted in words.
    let drawn = browser.eval("[document.querySelectorAll('line.segment').length, document.querySelectorAll('circle.station').length, document.getElementById('district-d01').textContent]");
    assert!(drawn[0].as_u64().unwrap() <= 12 * 48, "{drawn}");
    assert!(drawn[1].as_u64().unwrap() <= 12 * 8, "{drawn}");
    assert!(
        drawn[2].as_str().unwrap().contains("segments not drawn"),
        "{drawn}"
    );
    // The page answers at once (no long task blocks it): a round trip through its event loop.
    let t = Instant::now();
    let v = browser.eval("new Promise(r => setTimeout(() => r(document.getElementById('value-d12').textContent), 0))");
    assert_eq!(v, "240");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(loaded < Duration::from_secs(10), "{loaded:?}");
}
