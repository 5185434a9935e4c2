//! Combined writes ([`RedisConfig::combine_writes`](super::RedisConfig::combine_writes)):
//! the compare-and-set commits of one Redis store that are waiting at the same moment go
//! to the server in one script call, each commit's writes checked and applied as a unit
//! inside it, as if the commits had been sent one after another.
//!
//! A call is made by a task of its own (a "flight"), never by a committing update, so no
//! commit's fate depends on another caller: an update dropped while its commit waits is
//! taken out of the queue (nothing of it is sent); one dropped while its flight is in the
//! air changes nothing for the others. One flight is in the air at a time; the commits
//! arriving meanwhile make up the next one.

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use redis::{ErrorKind, RedisError, Value};
use tokio::sync::oneshot;

/// Checks and applies commits one after another, each as [`PUT_LUA`](super) would alone.
///
/// KEYS: counter, index, then the data keys of every commit in order. ARGV: the number of
/// commits, then per commit its number of writes `n` followed by five values per write,
/// as for `PUT_LUA` (`U`/`N`, expected revision or plain key, new revision or empty,
/// value, TTL in ms). Returns one answer per commit: `0` (a failed precondition: nothing
/// of it written), `{1, revisions...}` (applied), or `{2, message}` (the error that
/// stopped it, as data: a client reads an error anywhere in a reply as the whole reply's
/// error, which would hide the other commits' answers). An error leaves that commit
/// unwritten (its checks and every command that could fail run before its first session
/// write, as in `PUT_LUA`) and the others as they are: each commit runs under its own
/// `pcall`.
pub(super) const COMBINE_LUA: &str = r"
local function run(k, a, n)
  for i = 0, n - 1 do
    local key, arg = KEYS[k + i], a + i * 5
    if ARGV[arg + 1] == 'U' then
      if redis.call('HGET', key, 'r') ~= ARGV[arg + 2] then return 0 end
    elseif redis.call('HGET', key, 'r') then
      return 0
    end
  end
  local revisions = {1}
  for i = 0, n - 1 do
    local arg = a + i * 5
    if ARGV[arg + 1] == 'U' then
      revisions[i + 2] = ARGV[arg + 3]
    else
      local c = redis.call('INCR', KEYS[1])
      if c > 17999999999 then
        error('ERR the revision counter is exhausted')
      end
      revisions[i + 2] = c .. '000000000'
      redis.call('ZADD', KEYS[2], 0, ARGV[arg + 2])
    end
  end
  for i = 0, n - 1 do
    local key, arg = KEYS[k + i], a + i * 5
    redis.call('HSET', key, 'v', ARGV[arg + 4], 'r', revisions[i + 2])
    if ARGV[arg + 5] ~= '0' then
      redis.call('PEXPIRE', key, ARGV[arg + 5])
    elseif ARGV[arg + 1] == 'U' then
      redis.call('PERSIST', key)
    end
  end
  return revisions
end
local answers = {}
local k, a = 3, 2
for c = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[a])
  local ok, answer = pcall(run, k, a, n)
  if ok then
    answers[c] = answer
  elseif type(answer) == 'table' and answer.err then
    answers[c] = {2, answer.err}
  else
    answers[c] = {2, tostring(answer)}
  end
  k = k + n
  a = a + 1 + n * 5
end
return answers
";

/// One commit's writes in a combined call: their data keys, and five arguments per write
/// (as `PUT_LUA` takes them).
pub(super) struct Commit {
    pub(super) keys: Vec<Vec<u8>>,
    pub(super) args: Vec<Vec<u8>>,
}

/// What the server answered a combined call: one value per commit, or the call's error.
pub(super) type Answer = Result<Value, RedisError>;

/// Sends one combined call of `commits` (in order) and returns its raw answer.
pub(super) type Call = Arc<dyn Fn(Vec<Commit>) -> BoxFuture<'static, Answer> + Send + Sync>;

/// What became of a commit handed to the combiner.
pub(super) enum Outcome {
    /// The server's answer for this commit (or the error of the call that carried it).
    Answered(Answer),
    /// The call carrying it was abandoned after it was taken for sending (the runtime
    /// shut down): it may or may not have been applied.
    Abandoned,
}

/// The queue of commits waiting for the next call, and whether a flight is running.
#[derive(Default)]
pub(super) struct Combiner {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A flight task runs: it takes the queue when its call in the air is answered.
    flying: bool,
    next_id: u64,
    queue: Vec<Waiting>,
}

struct Waiting {
    id: u64,
    commit: Commit,
    answer: oneshot::Sender<Outcome>,
}

impl Combiner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds a valid queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `commit` for the next call (starting a flight when none runs) and waits
    /// for its answer. Dropping the returned future before its commit was taken removes
    /// it from the queue: nothing of it is sent.
    pub(super) async fn submit(self: &Arc<Self>, commit: Commit, call: &Call) -> Outcome {
        let (answer, answered) = oneshot::channel();
        let id = {
            let mut state = self.state();
            let id = state.next_id;
            state.next_id += 1;
            state.queue.push(Waiting { id, commit, answer });
            if !state.flying {
                state.flying = true;
                drop(state);
                self.start_flight(call.clone());
            }
            id
        };
        let queued = Queued { combiner: self, id };
        let outcome = answered.await.unwrap_or(Outcome::Abandoned);
        std::mem::forget(queued);
        outcome
    }

    /// Spawns the flight task; without a runtime, fails every queued commit as not sent.
    fn start_flight(self: &Arc<Self>, call: Call) {
        let flight = Flight {
            combiner: self.clone(),
            ended: false,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(flight.run(call));
            }
            // Dropped at once: every queued commit is told it was not sent.
            Err(_) => drop(flight),
        }
    }
}

/// Takes a commit out of the queue when its waiting future is dropped before its flight
/// took it (a flight that took it answers no one: the receiver is gone).
struct Queued<'c> {
    combiner: &'c Arc<Combiner>,
    id: u64,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.combiner
            .state()
            .queue
            .retain(|waiting| waiting.id != self.id);
    }
}

/// The running flight. Dropped before it ended (its runtime shut down), it lets the next
/// commit start another and tells the commits it never took that they were not sent.
struct Flight {
    combiner: Arc<Combiner>,
    /// It saw the queue empty and said so: nothing left for `drop` to do.
    ended: bool,
}

impl Flight {
    async fn run(mut self, call: Call) {
        loop {
            let taken = {
                let mut state = self.combiner.state();
                if state.queue.is_empty() {
                    state.flying = false;
                    self.ended = true;
                    return;
                }
                std::mem::take(&mut state.queue)
            };
            let (commits, answers): (Vec<Commit>, Vec<_>) = taken
                .into_iter()
                .map(|waiting| (waiting.commit, waiting.answer))
                .unzip();
            let count = commits.len();
            match call(commits).await {
                Ok(Value::Array(items)) if items.len() == count => {
                    for (answer, item) in answers.into_iter().zip(items) {
                        let _ = answer.send(Outcome::Answered(Ok(item)));
                    }
                }
                Ok(other) => {
                    // The script ran: what it did is not known.
                    let error = RedisError::from((
                        ErrorKind::UnexpectedReturnType,
                        "the combined write script answered",
                        format!("{other:?}, not one answer for each of {count} commits"),
                    ));
                    for answer in answers {
                        let _ = answer.send(Outcome::Answered(Err(error.clone())));
                    }
                }
                Err(error) => {
                    for answer in answers {
                        let _ = answer.send(Outcome::Answered(Err(error.clone())));
                    }
                }
            }
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let waiting = {
            let mut state = self.combiner.state();
            state.flying = false;
            std::mem::take(&mut state.queue)
        };
        for waiting in waiting {
            let error = RedisError::from((
                ErrorKind::Client,
                "not sent: the store's combined-write task stopped before sending it",
            ));
            let _ = waiting.answer.send(Outcome::Answered(Err(error)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    fn commit(name: &str) -> Commit {
        Commit {
            keys: vec![name.as_bytes().to_vec()],
            args: Vec::new(),
        }
    }

    /// A call that records the commits of each call, waits for `gate` before answering
    /// the first one, and answers each commit with its own key.
    fn recording(gate: Arc<Notify>, calls: Arc<Mutex<Vec<Vec<String>>>>) -> Call {
        Arc::new(move |commits: Vec<Commit>| {
            let (gate, calls) = (gate.clone(), calls.clone());
            Box::pin(async move {
                let names: Vec<String> = commits
                    .iter()
                    .map(|c| String::from_utf8(c.keys[0].clone()).unwrap())
                    .collect();
                let first = {
                    let mut calls = calls.lock().unwrap();
                    calls.push(names.clone());
                    calls.len() == 1
                };
                if first {
                    gate.notified().await;
                }
                Ok(Value::Array(
                    names
                        .into_iter()
                        .map(|n| Value::BulkString(n.into_bytes()))
                        .collect(),
                ))
            })
        })
    }

    /// Submits the commit `name` on a task of its own.
    fn spawn_submit(
        combiner: &Arc<Combiner>,
        call: &Call,
        name: &'static str,
    ) -> tokio::task::JoinHandle<Outcome> {
        let (combiner, call) = (combiner.clone(), call.clone());
        tokio::spawn(async move { combiner.submit(commit(name), &call).await })
    }

    /// Yields until `ready` holds.
    async fn until(ready: impl Fn() -> bool) {
        while !ready() {
            tokio::task::yield_now().await;
        }
    }

    fn answered_with(outcome: Outcome) -> String {
        match outcome {
            Outcome::Answered(Ok(Value::BulkString(bytes))) => String::from_utf8(bytes).unwrap(),
            Outcome::Answered(other) => panic!("unexpected answer {other:?}"),
            Outcome::Abandoned => panic!("abandoned"),
        }
    }

    #[tokio::test]
    async fn commits_waiting_during_a_call_go_together_in_the_next() {
        let combiner = Arc::new(Combiner::default());
        let (gate, calls) = (Arc::new(Notify::new()), Arc::new(Mutex::new(Vec::new())));
        let call = recording(gate.clone(), calls.clone());
        let first = spawn_submit(&combiner, &call, "a");
        // The first call is in the air (held by the gate) ...
        until(|| !calls.lock().unwrap().is_empty()).await;
        // ... while three more commits arrive.
        let later: Vec<_> = ["b", "c", "d"]
            .into_iter()
            .map(|name| spawn_submit(&combiner, &call, name))
            .collect();
        until(|| combiner.state().queue.len() == 3).await;
        gate.notify_one();
        assert_eq!(answered_with(first.await.unwrap()), "a");
        for (task, name) in later.into_iter().zip(["b", "c", "d"]) {
            assert_eq!(
                answered_with(task.await.unwrap()),
                name,
                "each commit gets its own answer"
            );
        }
        assert_eq!(
            *calls.lock().unwrap(),
            vec![
                vec!["a".to_owned()],
                vec!["b".into(), "c".into(), "d".into()]
            ]
        );
        assert!(!combiner.state().flying, "the flight ended with the queue");
    }

    #[tokio::test]
    async fn a_commit_dropped_while_waiting_is_not_sent() {
        let combiner = Arc::new(Combiner::default());
        let (gate, calls) = (Arc::new(Notify::new()), Arc::new(Mutex::new(Vec::new())));
        let call = recording(gate.clone(), calls.clone());
        let first = spawn_submit(&combiner, &call, "a");
        until(|| !calls.lock().unwrap().is_empty()).await;
        // Waits behind the call in the air, then is given up (a timeout around it).
        let gave_up = tokio::time::timeout(
            Duration::from_millis(20),
            combiner.submit(commit("dropped"), &call),
        )
        .await;
        assert!(gave_up.is_err());
        assert!(combiner.state().queue.is_empty(), "taken out of the queue");
        let kept = spawn_submit(&combiner, &call, "kept");
        until(|| !combiner.state().queue.is_empty()).await;
        gate.notify_one();
        assert_eq!(answered_with(first.await.unwrap()), "a");
        assert_eq!(answered_with(kept.await.unwrap()), "kept");
        assert_eq!(
            *calls.lock().unwrap(),
            vec![vec!["a".to_owned()], vec!["kept".to_owned()]],
            "the dropped commit was never sent"
        );
    }

    #[tokio::test]
    async fn a_failed_call_fails_each_of_its_commits_and_the_next_call_goes_out() {
        let combiner = Arc::new(Combiner::default());
        let failures = Arc::new(Mutex::new(1));
        let call: Call = {
            let failures = failures.clone();
            Arc::new(move |commits: Vec<Commit>| {
                let fail = std::mem::take(&mut *failures.lock().unwrap()) > 0;
                Box::pin(async move {
                    if fail {
                        Err(RedisError::from((ErrorKind::Io, "connection lost")))
                    } else {
                        Ok(Value::Array(
                            commits.iter().map(|_| Value::Int(0)).collect(),
                        ))
                    }
                })
            })
        };
        match combiner.submit(commit("a"), &call).await {
            Outcome::Answered(Err(error)) => assert_eq!(error.kind(), ErrorKind::Io),
            _ => panic!("the call's error"),
        }
        assert!(matches!(
            combiner.submit(commit("b"), &call).await,
            Outcome::Answered(Ok(Value::Int(0)))
        ));
    }

    #[test]
    fn a_runtime_shut_down_mid_call_abandons_the_sent_and_refuses_the_queued() {
        let combiner = Arc::new(Combiner::default());
        let (gate, calls) = (Arc::new(Notify::new()), Arc::new(Mutex::new(Vec::new())));
        let call = recording(gate, calls.clone());
        let mut sent = Box::pin(combiner.submit(commit("a"), &call));
        let mut queued = Box::pin(combiner.submit(commit("b"), &call));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // `a` queued, its flight spawned on this runtime and its call in the air ...
            assert!(futures_util::FutureExt::now_or_never(&mut sent).is_none());
            until(|| !calls.lock().unwrap().is_empty()).await;
            // ... and `b` waiting behind it.
            assert!(futures_util::FutureExt::now_or_never(&mut queued).is_none());
        });
        // The flight, stuck in its call, goes with the runtime.
        drop(runtime);
        assert!(matches!(
            futures_util::FutureExt::now_or_never(sent),
            Some(Outcome::Abandoned)
        ));
        match futures_util::FutureExt::now_or_never(queued) {
            Some(Outcome::Answered(Err(error))) => assert_eq!(error.kind(), ErrorKind::Client),
            _ => panic!("the queued commit is refused as not sent"),
        }
        let state = combiner.state();
        assert!(!state.flying, "a later commit can start a new flight");
        assert!(state.queue.is_empty());
    }

    #[test]
    fn without_a_runtime_a_commit_is_refused_as_not_sent() {
        let combiner = Arc::new(Combiner::default());
        let call: Call = Arc::new(|_| Box::pin(async { panic!("nothing may be sent") }));
        let outcome = futures_util::FutureExt::now_or_never(combiner.submit(commit("a"), &call))
            .expect("answered at once");
        match outcome {
            Outcome::Answered(Err(error)) => assert_eq!(error.kind(), ErrorKind::Client),
            _ => panic!("refused as not sent"),
        }
        assert!(!combiner.state().flying);
    }
}
