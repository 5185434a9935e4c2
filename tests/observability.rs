//! `tracing` spans and events around load and save name fragment, key, store and outcome, and
//! `Config::redact_keys` keeps session keys (chat and user ids) out of them; `stats()`
//! counts what happened.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use multisession::{ChatContext, Config, MultiSession, stores::MemoryStore};
use tracing::{
    Event, Metadata, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};

/// Records every event as "message: field=value, ...".
#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<String>>>,
    ids: Arc<AtomicU64>,
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push_str(&format!(" {}={value}", field.name()));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut line = Line(format!("span {}", span.metadata().name()));
        span.record(&mut line);
        self.events.lock().unwrap().push(line.0);
        Id::from_u64(self.ids.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        self.events.lock().unwrap().push(line.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[derive(MultiSession)]
struct Bot {
    count: u32,
}

fn run_one(config: Config) -> (Vec<String>, multisession::Stats) {
    let recorder = Recorder::default();
    let events = recorder.events.clone();
    let stats = tracing::subscriber::with_default(recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let sessions = Bot::builder()
                    .default_store(MemoryStore::new())
                    .config(config)
                    .build();
                sessions
                    .run(&ChatContext::new(-4711), async |s| {
                        *s.count().await? += 1;
                        Ok::<_, multisession::Error>(())
                    })
                    .await
                    .unwrap();
                sessions.stats()
            })
    });
    let events = events.lock().unwrap().clone();
    (events, stats)
}

#[test]
fn load_and_save_events_name_fragment_key_store_and_outcome() {
    let (events, stats) = run_one(Config::new());
    let loaded = events
        .iter()
        .find(|e| e.contains("session fragment loaded"))
        .unwrap_or_else(|| panic!("no load event in {events:#?}"));
    for part in [
        "fragment=count",
        "key=count:-4711",
        "store=memory",
        "found=false",
    ] {
        assert!(loaded.contains(part), "{part} missing in {loaded}");
    }
    let saved = events
        .iter()
        .find(|e| e.contains("session fragment saved"))
        .unwrap_or_else(|| panic!("no save event in {events:#?}"));
    for part in [
        "fragment=count",
        "key=count:-4711",
        "store=memory",
        "op=put",
        "outcome=applied",
    ] {
        assert!(saved.contains(part), "{part} missing in {saved}");
    }
    assert!(events.iter().any(|e| e.contains("session committed")));
    // The store calls run inside spans naming what they do.
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("span multisession.load") && e.contains("fragment=count")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("span multisession.commit")),
        "{events:#?}"
    );
    assert_eq!((stats.updates, stats.reads, stats.writes), (1, 1, 1));
}

#[test]
fn redacted_keys_stay_out_of_events() {
    let (events, _) = run_one(Config::new().redact_keys(true));
    assert!(!events.is_empty());
    for event in &events {
        assert!(!event.contains("4711"), "a key leaked: {event}");
    }
    assert!(events.iter().any(|e| e.contains("<redacted>")));
}
