//! The README's quick start, as a newcomer uses it: its `[dependencies]` lines and its
//! `src/main.rs`, pasted into a new crate, build and print what the README says.
//!
//! The new crate depends on this checkout (`multisession = { path = .. }` in place of the
//! version) and builds offline against the crates already fetched for the workspace (its
//! lock file is a copy of the workspace's), in a target directory of its own under
//! `target/`.

use std::{path::Path, process::Command, time::Duration};

/// The fenced block of `lang` that follows `heading` in `text`.
fn block_after<'a>(text: &'a str, heading: &str, lang: &str) -> &'a str {
    let from = text.find(heading).expect("the heading is in the README");
    let fence = format!("```{lang}\n");
    let start = text[from..].find(&fence).expect("a fenced block follows") + from + fence.len();
    let end = text[start..].find("```").expect("the block ends") + start;
    &text[start..end]
}

#[test]
fn the_quick_start_builds_and_runs_as_a_new_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let dependencies = block_after(&readme, "## Quick start", "toml");
    let main = block_after(&readme, "## Quick start", "rust");
    assert!(
        dependencies.contains("multisession = \"0.1\""),
        "the README names the crate by version: {dependencies}"
    );
    assert!(
        !main.lines().any(|l| l.starts_with("# ")),
        "the quick start hides no lines: what is shown is what compiles"
    );

    let dir = root.join("target").join("readme-quick-start");
    let _ = std::fs::remove_dir_all(dir.join("src"));
    std::fs::create_dir_all(dir.join("src")).expect("the crate's directory");
    let manifest = format!(
        "[package]\nname = \"mybot\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n[workspace]\n\n{}",
        dependencies.replace(
            "multisession = \"0.1\"",
            &format!(
                "multisession = {{ path = {:?} }}",
                root.display().to_string()
            ),
        )
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("Cargo.toml");
    std::fs::write(dir.join("src").join("main.rs"), main).expect("main.rs");
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).expect("Cargo.lock");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .args(["run", "--quiet", "--offline"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("RUSTFLAGS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cargo");
    // Bounded: a first build of the dependencies takes a minute or two here.
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the quick start did not build and run within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = child.wait_with_output().expect("cargo's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        status.success(),
        "the quick start failed as a new crate:\n{stderr}\n{stdout}"
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["[en] one margherita ordered", "pizzas in this chat: 1"],
        "{stderr}"
    );
}

/// The README's teloxide bot is the doc example of `multisession::teloxide`, which
/// rustdoc compiles: the two stay the same code.
#[test]
fn the_teloxide_bot_in_the_readme_is_the_compiled_doc_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let shown = block_after(&readme, "## With teloxide", "rust,ignore");
    let module = std::fs::read_to_string(root.join("session-runtime/src/teloxide.rs"))
        .expect("the teloxide module");
    let docs: String = module
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| {
            format!(
                "{}\n",
                l.strip_prefix("//! ")
                    .unwrap_or(l.trim_start_matches("//!"))
            )
        })
        .collect();
    let compiled = block_after(&docs, "**Sessions in handlers.**", "no_run");
    assert_eq!(
        shown, compiled,
        "README's teloxide block and the module's doc example differ"
    );
    assert!(
        shown.contains(".with_session::<Chat>()"),
        "the session is a parameter"
    );
}
