//! `logbook commit`: a whole transaction in one request (`POST /v1/commits`) — writes with
//! their conditions, atomic increments, and the reads and locks it declares — certified as an
//! interactive transaction at the same level would be.
//!
//! Every commit carries a request id (`--request-id`, or a fresh one): sent again with the
//! same id, a commit that committed answers `duplicate` and is not applied twice; one that
//! aborted is certified afresh.

use std::collections::BTreeSet;

use anyhow::bail;
use logbook_api::client::Commit;
use logbook_api::txns::{Committed, Isolation};
use serde_json::Value;

use crate::client::{Client, ServerArgs, print_json, problem_of};

/// Options of `logbook commit`.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP_EXAMPLES)]
pub struct CommitArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Put a JSON value: KEY=JSON, split at the first `=` (a string is quoted: k='"v"').
    #[arg(long = "put", value_name = "KEY=JSON")]
    puts: Vec<String>,
    /// Delete a key.
    #[arg(long = "delete", value_name = "KEY")]
    deletes: Vec<String>,
    /// Add N (may be negative) to a key's integer value at commit: KEY=N. Increments of one
    /// key by concurrent commits do not conflict.
    #[arg(long = "increment", value_name = "KEY=N", allow_hyphen_values = true)]
    increments: Vec<String>,
    /// Commit only if KEY is at VERSION when it commits (else `version_mismatch`): a
    /// condition on the --put or --delete of KEY. KEY=VERSION.
    #[arg(long = "if-version", value_name = "KEY=VERSION")]
    if_versions: Vec<String>,
    /// Commit only if KEY is absent when it commits (else `key_exists`): a condition on the
    /// --put of KEY.
    #[arg(long = "if-absent", value_name = "KEY")]
    if_absents: Vec<String>,
    /// Declare a read made at --snapshot: KEY=VERSION (the version seen), or KEY=absent.
    /// Certified like an interactive transaction's reads (at serializable, SSI).
    #[arg(long = "read", value_name = "KEY=VERSION")]
    reads: Vec<String>,
    /// Lock a key: it conflicts like a write (a read for update).
    #[arg(long = "lock", value_name = "KEY")]
    locks: Vec<String>,
    /// Declare the transaction read-only: no writes or locks; its declared reads are
    /// certified (at serializable, a read-only transaction that commits saw a state some
    /// serial order of the commits had).
    #[arg(long)]
    read_only: bool,
    /// The snapshot the declared reads were made at (a `_txn` offset: the commits below it;
    /// `snapshot` of a read). Default: the newest commit. A write to a key another commit
    /// changed since the snapshot is a conflict (first committer wins).
    #[arg(long)]
    snapshot: Option<u64>,
    /// Isolation level: serializable, snapshot or read_committed.
    #[arg(long, default_value = "serializable")]
    isolation: Isolation,
    /// The commit's request id (Idempotency-Key). Sent again with the same id, a commit is
    /// applied at most once. Default: a fresh one (printed when the outcome is unknown).
    /// Without --snapshot, a commit refused as retryable (a conflict with a concurrent
    /// commit) is committed again under this id, with backoff, a few times.
    #[arg(long)]
    request_id: Option<String>,
    /// Print the server's answer as one line of JSON (errors: its problem document).
    #[arg(long)]
    pub json: bool,
}

const HELP_EXAMPLES: &str = "\
Examples:
  logbook commit --put 'user/ada={\"seats\":2}' --increment seats/booked=2
  logbook commit --put hold/ada=true --if-absent hold/ada
  logbook commit --delete hold/ada --if-version hold/ada=41 --request-id release-ada
  logbook kv read seats/left          # snapshot 57; seats/left = 100 (version 56)
  logbook commit --snapshot 57 --read seats/left=56 --put seats/left=98
  logbook commit --read-only --snapshot 57 --read seats/left=56

A read-modify-write declares what it read: if another commit changed seats/left after
snapshot 57, the second command would lose that update, and it is refused
(serialization_failure).

Without --snapshot, a conflict is committed again under the same request id (a few times,
with backoff). With --snapshot it would meet the same conflict: it exits 1 with the
server's code (serialization_failure, snapshot_too_old): read again and commit again. A
failed condition is version_mismatch or key_exists.";

/// `KEY=VALUE` split at the first `=` (`last`: at the last one, for values that hold no
/// `=`, so a key may).
fn split<'a>(flag: &str, text: &'a str, last: bool) -> anyhow::Result<(&'a str, &'a str)> {
    let at = if last {
        text.rfind('=')
    } else {
        text.find('=')
    };
    match at {
        Some(i) => Ok((&text[..i], &text[i + 1..])),
        None => bail!("--{flag} {text:?}: expected KEY=VALUE"),
    }
}

fn number<T: std::str::FromStr>(flag: &str, text: &str, what: &str) -> anyhow::Result<(String, T)>
where
    T::Err: std::fmt::Display,
{
    let (key, value) = split(flag, text, true)?;
    let n = value
        .parse()
        .map_err(|e| anyhow::anyhow!("--{flag} {text:?}: {value:?} is not {what} ({e})"))?;
    Ok((key.to_owned(), n))
}

impl CommitArgs {
    /// The request, or an error naming the flag; nothing is sent for a bad one.
    fn request(&self) -> anyhow::Result<Commit> {
        let mut commit = Commit::new().isolation(self.isolation);
        if let Some(s) = self.snapshot {
            commit = commit.snapshot(s);
        }
        if self.read_only {
            commit = commit.read_only();
        }
        for text in &self.reads {
            let (key, version) = split("read", text, true)?;
            let version = match version {
                "absent" => None,
                v => Some(v.parse::<u64>().map_err(|e| {
                    anyhow::anyhow!("--read {text:?}: {v:?} is not a version or `absent` ({e})")
                })?),
            };
            commit = commit.read(key, version);
        }
        for key in &self.locks {
            commit = commit.lock(key.clone());
        }
        let mut if_version = std::collections::BTreeMap::new();
        for text in &self.if_versions {
            let (key, v): (String, u64) = number("if-version", text, "a version")?;
            if_version.insert(key, v);
        }
        let if_absent: BTreeSet<&str> = self.if_absents.iter().map(String::as_str).collect();
        let mut written = BTreeSet::new();
        let mut once = |key: &str, flag: &str| {
            if written.insert(key.to_owned()) {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "--{flag} {key:?}: the key is written twice; give one write per key"
                ))
            }
        };
        for text in &self.puts {
            let (key, json) = split("put", text, false)?;
            once(key, "put")?;
            let value: Value = serde_json::from_str(json).map_err(|e| {
                anyhow::anyhow!(
                    "--put {text:?}: the value is not JSON ({e}); a string is quoted: \
                     --put '{key}=\"{json}\"'"
                )
            })?;
            commit = match (if_version.remove(key), if_absent.contains(key)) {
                (Some(_), true) => {
                    bail!("--put {key:?}: give --if-version or --if-absent, not both")
                }
                (Some(v), false) => commit.put_if_version(key, &value, v),
                (None, true) => commit.put_if_absent(key, &value),
                (None, false) => commit.put(key, &value),
            };
        }
        for key in &self.deletes {
            once(key, "delete")?;
            if if_absent.contains(key.as_str()) {
                bail!("--if-absent {key:?}: a delete has no --if-absent (only a --put)");
            }
            commit = match if_version.remove(key) {
                Some(v) => commit.delete_if_version(key.clone(), v),
                None => commit.delete(key.clone()),
            };
        }
        for text in &self.increments {
            let (key, by): (String, i64) = number("increment", text, "an integer")?;
            once(&key, "increment")?;
            if if_version.contains_key(&key) || if_absent.contains(key.as_str()) {
                bail!("--increment {key:?}: an increment takes no condition");
            }
            commit = commit.increment(key, by);
        }
        if let Some(key) = if_version.keys().next() {
            bail!("--if-version {key:?}: no --put or --delete of {key:?} to put the condition on");
        }
        if let Some(key) = if_absent.iter().find(|k| !written.contains(**k)) {
            bail!("--if-absent {key:?}: no --put of {key:?} to put the condition on");
        }
        Ok(commit)
    }
}

/// Runs `logbook commit`.
pub fn run(args: CommitArgs) -> anyhow::Result<()> {
    let commit = args.request()?;
    let client = Client::new(&args.server)?;
    let request_id = args
        .request_id
        .clone()
        .unwrap_or_else(|| client.new_request_id());
    // A commit at the server's newest snapshot may pass when sent again; one pinned to a
    // snapshot meets the same conflict (read again instead).
    let retry = args.snapshot.is_none();
    let done = match client.commit(&request_id, &commit, retry) {
        Ok(done) => done,
        Err(e) => return Err(explain(e, &request_id)),
    };
    if args.json {
        return print_json(&done);
    }
    outln!("{}", committed_text(&done, "", &request_id));
    Ok(())
}

/// A failed commit's error with what to do about it.
fn explain(e: anyhow::Error, request_id: &str) -> anyhow::Error {
    match problem_of(&e) {
        Some(p) if p.problem.retryable == Some(true) => e.context(
            "commit: not applied, a conflict aborted it (retryable): read again and commit \
             again",
        ),
        Some(_) => e,
        None => e.context(format!(
            "commit: no answer; if the request reached the server its outcome is unknown: run \
             it again with --request-id {request_id} (with the same request id it is applied \
             at most once)"
        )),
    }
}

/// `committed[ SUBJECT] at offset N; KEY = VALUE…; token T`. A duplicate (`request_id`
/// had committed already) leads with what it means — nothing of this request was applied,
/// the rest is the original commit's answer — since the original may even have been
/// another transaction (a read-only one, whose id any commit is then answered with).
pub(crate) fn committed_text(done: &Committed, subject: &str, request_id: &str) -> String {
    let subject = if subject.is_empty() {
        String::new()
    } else {
        format!(" {subject}")
    };
    let mut text = String::new();
    if done.duplicate {
        text.push_str(&format!(
            "duplicate: not applied — request id {request_id:?} had committed already; \
             its original answer: "
        ));
    }
    text.push_str(&match done.offset {
        Some(offset) => format!("committed{subject} at offset {offset}"),
        None => format!("committed{subject} (it wrote nothing)"),
    });
    for (key, value) in &done.incremented {
        text.push_str(&format!("; {key} = {value}"));
    }
    if let Some(token) = &done.token {
        text.push_str(&format!("; token {token}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CommitArgs,
    }

    fn request(args: &[&str]) -> anyhow::Result<Value> {
        let cli = Cli::try_parse_from(std::iter::once("commit").chain(args.iter().copied()))?;
        Ok(serde_json::to_value(cli.args.request()?.body())?)
    }

    #[test]
    fn flags_become_the_wire_request() {
        let body = request(&[
            "--put",
            "a=\"b=c\"",
            "--increment",
            "c=-3",
            "--delete",
            "d",
            "--if-version",
            "d=7",
            "--read",
            "e=absent",
            "--read",
            "f=5",
            "--snapshot",
            "9",
            "--lock",
            "g",
            "--read-only",
        ])
        .unwrap();
        assert_eq!(body["read_only"], true);
        assert_eq!(body["isolation"], "serializable");
        assert_eq!(body["snapshot"], 9);
        assert_eq!(body["writes"][0]["key"], "a", "a put splits at the first =");
        assert_eq!(body["writes"][0]["value"], serde_json::json!("b=c"));
        assert_eq!(body["writes"][1]["op"], "delete");
        assert_eq!(body["writes"][1]["if_version"], 7);
        assert_eq!(body["writes"][2]["by"], -3);
        assert_eq!(body["reads"][0]["version"], Value::Null);
        assert_eq!(body["reads"][1]["version"], 5);
        assert_eq!(body["locks"][0], "g");
    }

    #[test]
    fn bad_flags_are_named_before_anything_is_sent() {
        for (args, says) in [
            (
                &["--put", "a=nope"][..],
                "--put \"a=nope\": the value is not JSON",
            ),
            (
                &["--increment", "a=x"],
                "--increment \"a=x\": \"x\" is not an integer",
            ),
            (
                &["--put", "a=1", "--if-version", "b=2"],
                "--if-version \"b\": no --put",
            ),
            (
                &["--put", "a=1", "--delete", "a"],
                "the key is written twice",
            ),
            (
                &["--increment", "a=1", "--if-absent", "a"],
                "takes no condition",
            ),
            (&["--read", "a=new"], "is not a version or `absent`"),
            (&["--put", "a"], "expected KEY=VALUE"),
        ] {
            let e = request(args).unwrap_err().to_string();
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }
}
