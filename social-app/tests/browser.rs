//! The web page end to end in headless Chromium: the app runs in-process on port 0 and
//! `tests/js/social.e2e.mjs` (playwright-core driving Debian's `/usr/bin/chromium`) signs two
//! users up through the page, befriends them, and checks that posts, messages and unread
//! badges arrive live, and that user text is never markup. Screenshots of every step go to
//! `<workspace>/artifacts/social-e2e`.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::{data_dir, start};

const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_live_and_safe_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf();
    let js = root.join("tests/js");
    assert!(
        js.join("node_modules/playwright-core").exists(),
        "playwright-core missing in {}: run `npm ci --prefix tests/js` (scripts/test.sh does)",
        js.display()
    );
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} missing: install Debian's chromium (scripts/test.sh does)"
    );
    let artifacts = root.join("artifacts/social-e2e");
    std::fs::create_dir_all(&artifacts).expect("artifact directory");

    let dir = data_dir();
    let (app, addr) = start(&dir, &[]).await;
    let run = tokio::process::Command::new("node")
        .arg("social.e2e.mjs")
        .arg(format!("http://{addr}"))
        .arg(&artifacts)
        .current_dir(&js)
        .env("CHROMIUM", CHROMIUM)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    // Every wait in the script is bounded (15 s); this bounds the whole run.
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test did not finish within 240 s")
        .expect("node must be installed (scripts/test.sh installs it)");
    println!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("screenshots: {}", artifacts.display());
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "social.e2e.mjs failed ({}); screenshots in {}",
        out.status,
        artifacts.display()
    );
}
