//! `dyno dashboard` in a real headless browser: seeds a demo results store, starts the
//! dashboard on a free loopback port, and drives Chromium through chromedriver over every view,
//! checking that each chart's canvas really drew and that triage needs the token.
//!
//! Needs `chromedriver` (on PATH) and Chromium (`/usr/bin/chromium`, else `chromium`,
//! `chromium-browser` or `google-chrome` on PATH; `DYNO_TEST_CHROMIUM` / `DYNO_TEST_CHROMEDRIVER`
//! override both). Without them the test FAILS rather than skips: .ci/run installs Debian's
//! `chromium` and `chromium-driver`.
//!
//! The contract the server follows (dashboard/src, dashboard/templates):
//!
//! - `dyno db seed-demo --db URL --days N` makes 20 series on branch `main` (plus some on a
//!   feature branch) with at least one regressed series, a confirmed alert, and a study.
//! - `dyno dashboard --db URL --bind 127.0.0.1:0 --token T` prints
//!   `dyno dashboard: listening on http://127.0.0.1:PORT` on stderr (words after the URL are
//!   allowed).
//! - `GET /`: `table#overview`, one `tr.series-row` per series (all branches unless filtered),
//!   each with `a.series-link`, a `span.status` with one of `status-ok`, `status-suspect`,
//!   `status-regressed`, `status-improved`, and a sparkline `td.spark div.chart`;
//!   `form#filters` (GET) with selects `model`, `workload`, `hardware`, `branch` and a text
//!   input `q`; `/?branch=main` shows the 20 main series.
//! - Series page (from `a.series-link`): `div#series-chart.chart`, `table#points` with
//!   `a.run-link`; its `h1` contains the text of the series link that led to it.
//! - `GET /runs/{id}`: `pre#config`, `table#environment`, `table.metrics` (one or more),
//!   `div.cdf-chart.chart` (one or more), `a#compare-previous` to the compare page.
//!   `GET /runs/999999`: a 404 page whose `h1` says "not found".
//! - `GET /compare?a=ID&b=ID`: `table#compare` with `tr.compare-row` rows (each showing a ratio,
//!   so a number), `div.cdf-chart.chart` (one or more).
//! - `GET /alerts`: `table#alerts` with `tr.alert-row` rows and `a.alert-link`; a confirmed
//!   alert's row shows the word "confirmed".
//! - `GET /alerts/{id}`: `span#alert-state`, `table#history`, `form#triage` with
//!   `select[name=action]` (options acknowledged, fixed, invalid, improvement),
//!   `textarea[name=note]`, `input[name=token]`, hidden `input[name=csrf]` and a submit button.
//!   A wrong token: an error page (an element `.error`, mentioning 401 or 403) and no change to
//!   the alert; the right token: a redirect back to the alert, whose history holds the note
//!   and whose `span#alert-state` (or the triage beside it, `#triage-state`) reads
//!   acknowledged.
//! - `GET /studies`: `table#studies`, `a.study-link` to a study page: `table#trials.sortable`
//!   (header cells in its `thead`, trials in its `tbody`), `div#pareto-chart.chart`,
//!   `div#convergence-chart.chart`, `div#predicted-vs-measured.chart`, `pre#best-config`,
//!   `a#download-config` (serves the best config as YAML).
//! - On every page, every `.chart` element holds a canvas that drew (dashboard/assets/dyno.js);
//!   pages with charts above have at least one.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long any one condition may take to come true before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);
/// Between two checks of a condition that is not true yet.
const POLL: Duration = Duration::from_millis(50);
const TOKEN: &str = "s3cret";
const NOTE: &str = "seen in browser test";

/// Kills (and reaps) a child process when dropped, so a failing test leaves nothing running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file())
}

/// The first of an override variable, fixed paths and names on PATH that exists.
fn find_program(var: &str, paths: &[&str], names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    paths
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| names.iter().find_map(|n| on_path(n)))
}

/// Polls `check` until it yields `Some`, failing with `what` after [`DEADLINE`].
fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out after {DEADLINE:?} waiting for {what}");
        std::thread::sleep(POLL);
    }
}

fn start_chromedriver(chromedriver: &Path) -> (KillOnDrop, u16) {
    let port = free_port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", chromedriver.display()));
    let mut guard = KillOnDrop(child);
    wait_until("chromedriver to accept connections", || {
        if let Ok(Some(status)) = guard.0.try_wait() {
            panic!("chromedriver exited early with {status} (port {port} taken?)");
        }
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (guard, port)
}

fn seed_demo(db: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["db", "seed-demo", "--db", db, "--days", "60"])
        .output()
        .expect("run dyno db seed-demo");
    assert!(
        out.status.success(),
        "dyno db seed-demo failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `dyno dashboard` and returns it with its base URL and its stderr so far (kept
/// draining by a thread, so the server never blocks on a full pipe).
fn start_dashboard(db: &str) -> (KillOnDrop, String, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["dashboard", "--db", db, "--bind", "127.0.0.1:0", "--token", TOKEN])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dyno dashboard");
    let stderr = child.stderr.take().expect("dashboard stderr");
    let guard = KillOnDrop(child);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    {
        let lines = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("dyno dashboard: listening on ") {
                    // The URL is the first word; anything after it (the store, whether
                    // triage is enabled) is for people.
                    let url = url.split_whitespace().next().unwrap_or("");
                    let _ = tx.send(url.trim_end_matches('/').to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
    }
    let base = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
        panic!(
            "dyno dashboard printed no `dyno dashboard: listening on http://...` line within \
             {DEADLINE:?}; its stderr:\n{}",
            lines.lock().unwrap().join("\n")
        )
    });
    assert!(base.starts_with("http://127.0.0.1:"), "unexpected listen URL {base:?}");
    (guard, base, lines)
}

async fn connect(driver_port: u16, chromium: &Path, profile: &Path) -> Result<Client> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let client = ClientBuilder::rustls()
        .context("fantoccini's rustls connector (it loads the system CA roots: ca-certificates)")?
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .context("start a Chromium session through chromedriver")?;
    Ok(client)
}

// ---- page helpers ----

async fn goto(c: &Client, base: &str, path: &str) -> Result<()> {
    c.goto(&format!("{base}{path}")).await.with_context(|| format!("GET {path}"))
}

async fn find(c: &Client, css: &str) -> Result<fantoccini::elements::Element> {
    match c.wait().at_most(DEADLINE).every(POLL).for_element(Locator::Css(css)).await {
        Ok(el) => Ok(el),
        Err(e) => Err(anyhow!(e).context(format!("no element `{css}` on {}", url_of(c).await))),
    }
}

async fn count(c: &Client, css: &str) -> Result<usize> {
    Ok(c.find_all(Locator::Css(css)).await?.len())
}

async fn url_of(c: &Client) -> String {
    c.current_url().await.map(|u| u.to_string()).unwrap_or_else(|e| format!("<no url: {e}>"))
}

async fn text_of(c: &Client, css: &str) -> Result<String> {
    Ok(find(c, css).await?.text().await?)
}

async fn script(c: &Client, js: &str, args: Vec<Value>) -> Result<Value> {
    c.execute(js, args).await.context("execute script")
}

/// Polls an async condition until it is true, failing with `what` after [`DEADLINE`].
async fn wait_for<F, Fut>(c: &Client, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(());
        }
        if start.elapsed() > DEADLINE {
            bail!("timed out after {DEADLINE:?} waiting for {what} (at {})", url_of(c).await);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every `.chart` holds a canvas with a nonzero size and at least one non-transparent pixel.
/// Returns [number of charts, number that drew, descriptions of those that did not].
const CHARTS_DRAWN_JS: &str = r#"
const charts = Array.from(document.querySelectorAll('.chart'));
let drawn = 0;
const bad = [];
charts.forEach((el) => {
  const ok = Array.from(el.querySelectorAll('canvas')).some((cv) => {
    if (!(cv.width > 0 && cv.height > 0)) return false;
    const data = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    for (let k = 3; k < data.length; k += 4) if (data[k] > 0) return true;
    return false;
  });
  if (ok) drawn++;
  else bad.push((el.id ? '#' + el.id : '.' + el.className) + ': ' + el.textContent.slice(0, 120));
});
return [charts.length, drawn, bad];
"#;

/// Asserts every chart on the page drew; `at_least_one` for pages whose contract has charts.
async fn check_charts(c: &Client, at_least_one: bool) -> Result<usize> {
    let start = Instant::now();
    let last = loop {
        let v = script(c, CHARTS_DRAWN_JS, vec![]).await?;
        let total = v[0].as_u64().unwrap_or(0);
        let drawn = v[1].as_u64().unwrap_or(0);
        if total == drawn && (total > 0 || !at_least_one) {
            return Ok(total as usize);
        }
        if start.elapsed() > DEADLINE {
            break v;
        }
        tokio::time::sleep(POLL).await;
    };
    bail!("charts on {} did not all draw: [total, drawn, not drawn] = {last}", url_of(c).await)
}

async fn row_texts(c: &Client, css: &str) -> Result<Vec<String>> {
    let v = script(
        c,
        "return Array.from(document.querySelectorAll(arguments[0])).map(r => r.innerText);",
        vec![json!(css)],
    )
    .await?;
    Ok(serde_json::from_value(v)?)
}

// ---- pages ----

/// Overview: all series, then the branch filter (form and URL); clicks into a regressed series
/// and returns that series link's text.
async fn overview(c: &Client, base: &str) -> Result<String> {
    goto(c, base, "/").await?;
    find(c, "table#overview").await?;
    let all = count(c, "table#overview tr.series-row").await?;
    ensure!(all >= 20, "overview shows {all} series rows over all branches, expected >= 20");
    let problems = script(
        c,
        r#"
        const ok = ['status-ok', 'status-suspect', 'status-regressed', 'status-improved'];
        const out = [];
        document.querySelectorAll('table#overview tr.series-row').forEach((row, i) => {
          if (!row.querySelector('a.series-link')) out.push(i + ': no a.series-link');
          const s = row.querySelector('span.status');
          if (!s || !ok.some((k) => s.classList.contains(k))) out.push(i + ': no span.status with a known status class');
          if (!row.querySelector('td.spark div.chart')) out.push(i + ': no td.spark div.chart');
        });
        return out;
        "#,
        vec![],
    )
    .await?;
    ensure!(problems.as_array().is_some_and(|a| a.is_empty()), "overview rows: {problems}");
    let charts = check_charts(c, true).await?;
    ensure!(charts >= all, "{charts} charts for {all} series rows");

    // The filter form: every control the contract names, and branch=main through it.
    for name in ["model", "workload", "hardware", "branch"] {
        find(c, &format!("form#filters select[name={name}]")).await?;
    }
    find(c, "form#filters input[name=q]").await?;
    find(c, "form#filters select[name=branch]").await?.select_by_value("main").await?;
    find(c, "form#filters [type=submit]").await?.click().await?;
    wait_for(c, "the filtered overview (branch=main)", move || async move {
        let url = c.current_url().await?;
        Ok(url.query_pairs().any(|(k, v)| k == "branch" && v == "main")
            && count(c, "table#overview").await? == 1)
    })
    .await?;
    let main_rows = count(c, "table#overview tr.series-row").await?;
    ensure!(main_rows == 20, "filter form branch=main shows {main_rows} rows, expected 20");
    check_charts(c, true).await?;

    goto(c, base, "/?branch=main").await?;
    find(c, "table#overview").await?;
    let main_rows = count(c, "table#overview tr.series-row").await?;
    ensure!(main_rows == 20, "/?branch=main shows {main_rows} rows, expected 20");
    let regressed = count(c, "table#overview tr.series-row span.status.status-regressed").await?;
    ensure!(regressed >= 1, "no status-regressed series on branch main");
    check_charts(c, true).await?;

    let link =
        find(c, "table#overview tr.series-row:has(span.status-regressed) a.series-link").await?;
    let name = link.text().await?.trim().to_string();
    ensure!(!name.is_empty(), "the regressed series' link has no text");
    link.click().await?;
    Ok(name)
}

/// Series page (reached from the overview): chart, points table; clicks into a run.
async fn series(c: &Client, scenario: &str) -> Result<()> {
    find(c, "div#series-chart.chart").await?;
    find(c, "table#points a.run-link").await?;
    let h1 = text_of(c, "h1").await?;
    ensure!(h1.contains(scenario), "series page heading {h1:?} does not name {scenario:?}");
    check_charts(c, true).await?;
    find(c, "table#points a.run-link").await?.click().await?;
    Ok(())
}

/// Run page (reached from a series): config, environment, metrics, CDFs; follows
/// `a#compare-previous`.
async fn run(c: &Client) -> Result<()> {
    find(c, "pre#config").await?;
    let path = c.current_url().await?.path().to_string();
    let id = path.strip_prefix("/runs/").unwrap_or("");
    ensure!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        "run page at {path}, expected /runs/ID"
    );
    ensure!(!text_of(c, "pre#config").await?.trim().is_empty(), "empty pre#config");
    find(c, "table#environment").await?;
    ensure!(count(c, "table.metrics").await? >= 1, "no table.metrics");
    ensure!(count(c, "div.cdf-chart.chart").await? >= 1, "no div.cdf-chart.chart");
    check_charts(c, true).await?;
    find(c, "a#compare-previous").await?.click().await?;
    Ok(())
}

/// Compare page (reached from a run): per-measure ratio rows and CDFs.
async fn compare(c: &Client) -> Result<()> {
    find(c, "table#compare").await?;
    let url = c.current_url().await?;
    ensure!(url.path() == "/compare", "compare page at {url}");
    for key in ["a", "b"] {
        ensure!(
            url.query_pairs()
                .any(|(k, v)| k == key && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())),
            "compare URL {url} lacks a numeric `{key}`"
        );
    }
    let rows = row_texts(c, "table#compare tr.compare-row").await?;
    ensure!(!rows.is_empty(), "no tr.compare-row");
    for row in &rows {
        ensure!(row.bytes().any(|b| b.is_ascii_digit()), "compare row without a ratio: {row:?}");
    }
    ensure!(count(c, "div.cdf-chart.chart").await? >= 1, "no div.cdf-chart.chart on compare");
    check_charts(c, true).await?;
    Ok(())
}

async fn not_found(c: &Client, base: &str) -> Result<()> {
    goto(c, base, "/runs/999999").await?;
    let h1 = text_of(c, "h1").await?;
    ensure!(h1.to_lowercase().contains("not found"), "/runs/999999 heading {h1:?}");
    check_charts(c, false).await?;
    Ok(())
}

/// Alerts list: opens a confirmed alert; returns its path.
async fn alerts(c: &Client, base: &str) -> Result<String> {
    goto(c, base, "/alerts").await?;
    find(c, "table#alerts").await?;
    ensure!(count(c, "table#alerts tr.alert-row a.alert-link").await? >= 1, "no alert links");
    check_charts(c, false).await?;
    let href = script(
        c,
        r#"
        const row = Array.from(document.querySelectorAll('table#alerts tr.alert-row'))
          .find((r) => /\bconfirmed\b/i.test(r.innerText));
        const a = row && row.querySelector('a.alert-link');
        return a ? a.getAttribute('href') : null;
        "#,
        vec![],
    )
    .await?;
    let href = href.as_str().ok_or_else(|| anyhow!("no tr.alert-row reads `confirmed`"))?;
    let url = c.current_url().await?.join(href)?;
    c.goto(url.as_str()).await?;
    let path = c.current_url().await?.path().to_string();
    ensure!(path.starts_with("/alerts/"), "alert link led to {path}");
    Ok(path)
}

async fn fill_triage(c: &Client, token: &str, note: &str) -> Result<()> {
    let form = find(c, "form#triage").await?;
    form.find(Locator::Css("select[name=action]")).await?.select_by_value("acknowledged").await?;
    let note_el = form.find(Locator::Css("textarea[name=note]")).await?;
    note_el.clear().await?;
    note_el.send_keys(note).await?;
    let token_el = form.find(Locator::Css("input[name=token]")).await?;
    token_el.clear().await?;
    token_el.send_keys(token).await?;
    form.find(Locator::Css("[type=submit]")).await?.click().await?;
    Ok(())
}

/// Alert page: the triage form's shape, a refused wrong token, then an acknowledgement.
async fn alert(c: &Client, base: &str, path: &str) -> Result<()> {
    find(c, "span#alert-state").await?;
    find(c, "table#history").await?;
    let opts = script(
        c,
        "return Array.from(document.querySelectorAll('form#triage select[name=action] option')).map(o => o.value);",
        vec![],
    )
    .await?;
    for want in ["acknowledged", "fixed", "invalid", "improvement"] {
        ensure!(
            opts.as_array().is_some_and(|a| a.iter().any(|v| v == want)),
            "triage action options {opts} lack {want:?}"
        );
    }
    find(c, "form#triage textarea[name=note]").await?;
    find(c, "form#triage input[name=token]").await?;
    let csrf = find(c, "form#triage input[name=csrf]").await?;
    ensure!(csrf.attr("type").await?.as_deref() == Some("hidden"), "csrf input is not hidden");
    ensure!(csrf.prop("value").await?.is_some_and(|v| !v.is_empty()), "empty csrf value");
    check_charts(c, false).await?;
    let history_before = text_of(c, "table#history").await?;
    let state_before = text_of(c, "span#alert-state").await?;

    // A wrong token is refused and changes nothing.
    fill_triage(c, "not-the-token", "wrong token attempt").await?;
    let error = find(c, ".error").await?.text().await?;
    let body = text_of(c, "body").await?;
    ensure!(
        ["401", "403"].iter().any(|code| error.contains(code) || body.contains(code)),
        "the wrong-token page shows no 401/403: {error:?}"
    );
    goto(c, base, path).await?;
    ensure!(
        text_of(c, "table#history").await? == history_before,
        "history changed after a wrong token"
    );
    ensure!(
        text_of(c, "span#alert-state").await? == state_before,
        "state changed after a wrong token"
    );

    // The right token acknowledges, and the redirect lands back on the alert.
    fill_triage(c, TOKEN, NOTE).await?;
    wait_for(c, "the acknowledged alert page", move || async move {
        let here = c.current_url().await?.path().to_string();
        if here != path || count(c, "table#history").await? == 0 {
            return Ok(false);
        }
        Ok(text_of(c, "table#history").await?.contains(NOTE))
    })
    .await?;
    // The state itself (`span#alert-state`) or the triage beside it reads acknowledged.
    let state = script(
        c,
        "return ['#alert-state', '#triage-state', 'form#triage']
           .map((q) => document.querySelector(q)).filter((e) => e).map((e) => e.innerText).join(' | ');",
        vec![],
    )
    .await?;
    let state = state.as_str().unwrap_or("").to_lowercase();
    ensure!(
        text_of(c, "span#alert-state").await?.to_lowercase().contains("acknowledged")
            || c.find_all(Locator::Css("#triage-state")).await?.len() == 1
                && text_of(c, "#triage-state").await?.to_lowercase().contains("acknowledged"),
        "neither span#alert-state nor #triage-state reads acknowledged after triage: {state:?}"
    );
    Ok(())
}

/// Studies list and one study: sortable trials, Pareto/convergence/predicted-vs-measured
/// charts, best config and its YAML download.
async fn studies(c: &Client, base: &str) -> Result<()> {
    goto(c, base, "/studies").await?;
    find(c, "table#studies").await?;
    check_charts(c, false).await?;
    find(c, "table#studies a.study-link").await?.click().await?;
    find(c, "table#trials.sortable").await?;
    for id in ["pareto-chart", "convergence-chart", "predicted-vs-measured"] {
        find(c, &format!("div#{id}.chart")).await?;
    }
    check_charts(c, true).await?;
    ensure!(!text_of(c, "pre#best-config").await?.trim().is_empty(), "empty pre#best-config");

    // Some header click (ascending, or descending on a second click) reorders the trials.
    let rows = "table#trials tbody tr";
    let headers = c.find_all(Locator::Css("table#trials thead th")).await?;
    ensure!(!headers.is_empty(), "table#trials has no thead th");
    let mut reordered = false;
    'headers: for th in &headers {
        for _ in 0..2 {
            let before = row_texts(c, rows).await?;
            th.click().await?;
            let after = row_texts(c, rows).await?;
            ensure!(before.len() == after.len(), "sorting changed the number of trials");
            if before != after {
                reordered = true;
                break 'headers;
            }
        }
    }
    ensure!(reordered, "no header click reordered table#trials");

    let href = find(c, "a#download-config").await?.prop("href").await?;
    let href = href.ok_or_else(|| anyhow!("a#download-config has no href"))?;
    let got = c
        .execute_async(
            "const [href, done] = arguments;
             fetch(href).then((r) => r.text().then((t) => done([r.status, t])))
               .catch((e) => done([0, String(e)]));",
            vec![json!(href)],
        )
        .await?;
    let status = got[0].as_u64().unwrap_or(0);
    let body = got[1].as_str().unwrap_or("");
    ensure!(status == 200, "GET {href}: {status} {body}");
    let yaml_like = body.lines().any(|l| {
        let l = l.trim_start_matches("- ");
        l.split_once(':').is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
        })
    });
    ensure!(yaml_like && !body.contains("<html"), "download-config is not YAML:\n{body}");
    Ok(())
}

async fn browse(c: &Client, base: &str) -> Result<()> {
    let scenario = overview(c, base).await.context("overview")?;
    series(c, &scenario).await.context("series page")?;
    run(c).await.context("run page")?;
    compare(c).await.context("compare page")?;
    not_found(c, base).await.context("404 page")?;
    let alert_path = alerts(c, base).await.context("alerts")?;
    alert(c, base, &alert_path).await.context("alert triage")?;
    studies(c, base).await.context("studies")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let chromedriver = find_program(
        "DYNO_TEST_CHROMEDRIVER",
        &["/usr/bin/chromedriver"],
        &["chromedriver"],
    )
    .expect(
        "chromedriver not found (install Debian's `chromium-driver`, as .ci/run does, or set \
             DYNO_TEST_CHROMEDRIVER); this test does not skip",
    );
    let chromium = find_program(
        "DYNO_TEST_CHROMIUM",
        &["/usr/bin/chromium"],
        &["chromium", "chromium-browser", "google-chrome"],
    )
    .expect(
        "Chromium not found (install Debian's `chromium`, as .ci/run does, or set \
         DYNO_TEST_CHROMIUM); this test does not skip",
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("demo.sqlite").display());
    seed_demo(&db);
    let (_server, base, server_log) = start_dashboard(&db);
    let (_driver, driver_port) = start_chromedriver(&chromedriver);
    let client = connect(driver_port, &chromium, &dir.path().join("chrome-profile"))
        .await
        .expect("WebDriver session");

    let outcome = browse(&client, &base).await;
    let failure = match &outcome {
        Ok(()) => None,
        Err(e) => {
            let at = url_of(&client).await;
            let page = text_of(&client, "body").await.unwrap_or_default();
            let page: String = page.chars().take(2000).collect();
            Some(format!(
                "{e:#}\n\nat {at}; page text:\n{page}\n\ndyno dashboard stderr:\n{}",
                server_log.lock().unwrap().join("\n")
            ))
        }
    };
    let _ = client.close().await;
    if let Some(msg) = failure {
        panic!("{msg}");
    }
}
