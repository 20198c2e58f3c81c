//! `logbook view ...`: derived views through a running server (HTTP API v1).
//!
//! Views are kept by the server's processors; these commands create, inspect, read, rebuild,
//! switch and drop them over HTTP. Reads answer from what the view has applied; pass the
//! token an append printed (`--token`) to wait until the view reflects that write.
//! `rebuild` and `create --wait` draw a progress bar by polling the view's status.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::{Value, json};

use logbook_api::views::{
    RebuildBody, Rebuilt, RolloutOut, StatusOut, SwitchBody, ViewDetail, ViewList, ViewOut,
    ViewRow, ViewRows,
};
use logbook_api::{ProblemCode, paths};

use crate::client::{Answer, Client, ServerArgs, is_problem, json_arg, print_json};

/// How often a progress bar or `--wait` polls the view's status.
const POLL: Duration = Duration::from_millis(200);

/// Default longest wait of `create --wait` and `rebuild` for a version to catch up, ms
/// (1 hour: a large source takes long, but a stuck view should not hang a script forever).
const PROGRESS_TIMEOUT_MS: u64 = 3_600_000;

/// Derived views on a running server.
#[derive(Debug, clap::Subcommand)]
pub enum ViewCommand {
    /// Create a view from a JSON spec (docs/views.md); the server builds it from offset 0.
    ///
    /// The same spec again is no change; another spec under the name is `view_exists`.
    ///
    /// Example:
    ///   logbook view create by-carrier --wait --spec '{"source":"flights","kind":"aggregate",
    ///     "group_by":["carrier"],"aggregates":{"flights":{"fn":"count"}}}'
    #[command(verbatim_doc_comment)]
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// The view's name: letters, digits, '.', '_' and '-'.
        name: String,
        /// The spec: JSON text, or @FILE. Sent as it is; the server names a bad field.
        #[arg(long)]
        spec: String,
        /// Wait, with a progress bar, until the view has applied its whole source.
        #[arg(long)]
        wait: bool,
        /// With --wait: longest wait, ms (the view keeps building on the server after it).
        #[arg(long, default_value_t = PROGRESS_TIMEOUT_MS)]
        timeout_ms: u64,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List views: kind, source, current version and every version; a view whose current
    /// version stopped (its source stream was dropped) is flagged `STOPPED` (JSON: `stopped`).
    ///
    /// Example: `logbook view list`
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Applied offsets, lag, progress and (with --digest) the rows and digest of each version.
    ///
    /// Example: `logbook view status by-carrier --wait --digest`
    Status {
        #[command(flatten)]
        server: ServerArgs,
        /// The view.
        name: String,
        /// Also count the rows and compute each version's digest (reads every row).
        #[arg(long)]
        digest: bool,
        /// First wait (up to --timeout-ms) until every version has applied its whole source.
        #[arg(long)]
        wait: bool,
        /// Longest wait, ms.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read rows by key (table: record key; index: indexed value; aggregate: group key — `""`
    /// for the one row of an aggregate without group_by).
    ///
    /// A key that has no row makes the exit status non-zero: one key is `key_not_found`;
    /// with several, the rows found are printed and the error on stderr lists the missing.
    ///
    /// Examples:
    ///   logbook view get by-carrier UA AA --json
    ///   logbook view get orders-by-id order-1 --token "$TOKEN"   # wait for your write
    #[command(verbatim_doc_comment)]
    Get {
        #[command(flatten)]
        server: ServerArgs,
        /// The view.
        name: String,
        /// Keys to read.
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Read rows in key order: a range (--prefix, --start, --end, --limit) or --keys.
    ///
    /// A page that stops early says so on stderr (`# more: continue with --start 'KEY'`,
    /// shell-quoted; --json: the answer's `next`); stdout holds only rows.
    ///
    /// Examples:
    ///   logbook view scan by-carrier --limit 5
    ///   logbook view scan by-day --prefix 'EWR|' --limit 31
    ///   logbook view scan by-carrier --keys UA,AA,DL
    #[command(verbatim_doc_comment)]
    Scan {
        #[command(flatten)]
        server: ServerArgs,
        /// The view.
        name: String,
        /// Keys starting with this.
        #[arg(long, conflicts_with = "keys")]
        prefix: Option<String>,
        /// Keys from this one on, inclusive (the `next` of an earlier page).
        #[arg(long, conflicts_with = "keys")]
        start: Option<String>,
        /// Keys before this one (exclusive).
        #[arg(long, conflicts_with = "keys")]
        end: Option<String>,
        /// Most rows, 1..=10000.
        #[arg(long, default_value_t = 100, conflicts_with = "keys")]
        limit: usize,
        /// These keys, comma-separated, read from one snapshot (instead of a range).
        #[arg(long)]
        keys: Option<String>,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Recompute a view from offset 0 into a new version while the current one serves.
    ///
    /// Shows a progress bar (records done/total, rate, ETA) until the new version has caught
    /// up. Reads stay on the current version until you switch: pass --switch, or run
    /// `logbook view switch NAME VERSION` later (a percentage rolls out gradually;
    /// switching back is the rollback).
    ///
    /// Example: `logbook view rebuild by-carrier --switch`
    Rebuild {
        #[command(flatten)]
        server: ServerArgs,
        /// The view.
        name: String,
        /// A new spec (JSON or @FILE) for the new version; default: the current one.
        #[arg(long)]
        spec: Option<String>,
        /// Switch reads to the new version once it has caught up.
        #[arg(long)]
        switch: bool,
        /// Longest wait for the new version to catch up, ms (it keeps building on the
        /// server after it; nothing is switched then).
        #[arg(long, default_value_t = PROGRESS_TIMEOUT_MS)]
        timeout_ms: u64,
        /// Print a JSON summary (no progress bar).
        #[arg(long)]
        json: bool,
    },
    /// Route reads to a version: all of them (a switch, also the rollback) or a percentage.
    ///
    /// Examples:
    ///   logbook view switch by-carrier 2 --percent 10   # 10 % of reads, by key hash
    ///   logbook view switch by-carrier 2                # all reads
    ///   logbook view switch by-carrier 1                # roll back
    #[command(verbatim_doc_comment)]
    Switch {
        #[command(flatten)]
        server: ServerArgs,
        /// The view.
        name: String,
        /// The version.
        version: u64,
        /// Percent of reads (by key hash); 100 switches, 0 ends a rollout.
        #[arg(long, default_value_t = 100)]
        percent: u8,
        /// Longest wait for the version to catch up with the current one, ms.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drop a view (or only one version of it) and free its state.
    ///
    /// Example: `logbook view drop by-carrier --version 1`
    Drop {
        #[command(flatten)]
        server: ServerArgs,
        /// The view.
        name: String,
        /// Only this version (not the current one).
        #[arg(long)]
        version: Option<u64>,
        /// Print `{"dropped": NAME, "version": V}`.
        #[arg(long)]
        json: bool,
    },
}

/// Read options of `get` and `scan`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadArgs {
    /// A consistency token printed by `stream append`: wait until the view reflects that
    /// write. (A transaction commit's token names the `_txn` stream, which views do not
    /// read.) Without one, read what the view has applied now.
    #[arg(long)]
    token: Option<String>,
    /// Longest wait for the token, ms (the server's default is 5000, its limit 60000).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print the server's answer as JSON.
    #[arg(long)]
    json: bool,
}

impl ReadArgs {
    /// How long the server may wait for the token: the client waits that long on top of
    /// --client-timeout-ms (the server's default wait, 5 s, fits in the client's own).
    fn wait_ms(&self) -> u64 {
        if self.token.is_some() {
            self.timeout_ms.unwrap_or(0)
        } else {
            0
        }
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(t) = &self.token {
            q.push(("token", t.clone()));
        }
        if let Some(ms) = self.timeout_ms {
            q.push(("timeout_ms", ms.to_string()));
        }
        q
    }
}

impl ViewCommand {
    /// Whether the command was asked for JSON output (errors then print the problem
    /// document).
    pub fn json(&self) -> bool {
        match self {
            ViewCommand::Create { json, .. }
            | ViewCommand::List { json, .. }
            | ViewCommand::Status { json, .. }
            | ViewCommand::Rebuild { json, .. }
            | ViewCommand::Switch { json, .. }
            | ViewCommand::Drop { json, .. } => *json,
            ViewCommand::Get { read, .. } | ViewCommand::Scan { read, .. } => read.json,
        }
    }
}

/// `view list --json`: the server's list, each view with whether its current version has
/// stopped (the list itself has no status).
#[derive(Serialize)]
struct Listed {
    views: Vec<ListedView>,
}

/// One view of [`Listed`].
#[derive(Serialize)]
struct ListedView {
    #[serde(flatten)]
    view: ViewOut,
    /// Why the current version stopped (`null`: it runs).
    stopped: Option<String>,
}

/// The `kind` and `source` of a view's spec (a spec is JSON the server checks; the CLI
/// shows these two members).
fn kind_and_source(spec: &Value) -> (&str, &str) {
    let member = |name| spec.get(name).and_then(Value::as_str).unwrap_or_default();
    (member("kind"), member("source"))
}

/// Runs a `logbook view` command.
pub fn run(cmd: ViewCommand) -> anyhow::Result<()> {
    match cmd {
        ViewCommand::Create {
            server,
            name,
            spec,
            wait,
            timeout_ms,
            json,
        } => {
            let client = Client::new(&server)?;
            let answer: Answer<ViewOut> = client.put_raw(&paths::view(&name), &json_arg(&spec)?)?;
            let version = answer.body.current;
            if !json {
                let verb = if answer.status == 201 {
                    "created"
                } else {
                    "exists with this spec:"
                };
                outln!("{verb} view {name} (version {version})");
            }
            if wait {
                follow_progress(&client, &name, version, json, timeout_ms)?;
            }
            if json {
                print_json(&answer.body)?;
            }
        }
        ViewCommand::List { server, json } => {
            let client = Client::new(&server)?;
            let list: ViewList = client.get_as(&paths::views(), &[])?;
            // The list has no status: ask each view whether its current version runs (a
            // view whose source stream was dropped has stopped and refuses reads).
            let views = list.views.into_iter().map(|view| {
                let stopped = client
                    .get_as::<ViewDetail>(&paths::view(&view.view), &[])
                    .ok()
                    .and_then(|st| st.status.error);
                ListedView { view, stopped }
            });
            let list = Listed {
                views: views.collect(),
            };
            if json {
                return print_json(&list);
            }
            outln!(
                "{:<24} {:<10} {:<20} {:>8}  versions",
                "view",
                "kind",
                "source",
                "current"
            );
            for ListedView { view: v, stopped } in &list.views {
                let versions: Vec<String> = v.versions.iter().map(|n| format!("v{n}")).collect();
                let (kind, source) = kind_and_source(&v.spec);
                outln!(
                    "{:<24} {:<10} {:<20} {:>8}  {}{}{}",
                    v.view,
                    kind,
                    source,
                    format!("v{}", v.current),
                    versions.join(","),
                    rollout_text(v.rollout),
                    stopped
                        .as_ref()
                        .map(|e| format!("  STOPPED: {e}"))
                        .unwrap_or_default(),
                );
            }
        }
        ViewCommand::Status {
            server,
            name,
            digest,
            wait,
            timeout_ms,
            json,
        } => {
            let client = Client::new(&server)?;
            if wait {
                let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                loop {
                    let st: ViewDetail = client.get_as(&paths::view(&name), &[])?;
                    if st
                        .versions
                        .iter()
                        .all(|v| v.lag_records == 0 || v.error.is_some())
                    {
                        break;
                    }
                    if Instant::now() >= deadline {
                        bail!(
                            "view {name} has not caught up within {timeout_ms} ms (raise --timeout-ms)"
                        );
                    }
                    std::thread::sleep(POLL);
                }
            }
            let query = if digest {
                vec![("digest", "true".to_string())]
            } else {
                Vec::new()
            };
            let st: ViewDetail = client.get_as(&paths::view(&name), &query)?;
            if json {
                return print_json(&st);
            }
            let (kind, source) = kind_and_source(&st.spec);
            outln!(
                "{}: {} from {}, current v{}{}",
                name,
                kind,
                source,
                st.current,
                rollout_text(st.rollout),
            );
            for v in &st.versions {
                print_version(v, v.version == st.current)?;
            }
        }
        ViewCommand::Get {
            server,
            name,
            keys,
            read,
        } => {
            let client = Client::new(&server)?;
            let query = read.query();
            // One request for all keys, unless a key holds the list separator. The empty key
            // (the one row of an aggregate without group_by) has no path segment: it is read
            // with `keys=`.
            let row = |key: &str| -> anyhow::Result<ViewRow> {
                client.get_waiting_as(&paths::view_row(&name, key), &query, read.wait_ms())
            };
            let answer = if let [key] = keys.as_slice()
                && !key.is_empty()
            {
                ViewRows {
                    rows: vec![row(key)?],
                    next: None,
                    token: None,
                }
            } else if keys.iter().any(|k| k.contains(',')) {
                let mut rows = Vec::new();
                for key in &keys {
                    match row(key) {
                        Ok(row) => rows.push(row),
                        Err(e) if is_problem(&e, ProblemCode::KeyNotFound) => {}
                        Err(e) => return Err(e),
                    }
                }
                ViewRows {
                    rows,
                    next: None,
                    token: None,
                }
            } else {
                let mut query = query.clone();
                query.push(("keys", keys.join(",")));
                client.get_waiting_as(&paths::view_rows(&name), &query, read.wait_ms())?
            };
            if read.json {
                print_json(&answer)?;
            } else {
                print_rows(&answer)?;
            }
            let found: Vec<&str> = answer.rows.iter().map(|r| r.key.as_str()).collect();
            let missing: Vec<&str> = keys
                .iter()
                .map(String::as_str)
                .filter(|k| !found.contains(k))
                .collect();
            if !missing.is_empty() {
                bail!(
                    "no row for {} of the {} keys: {}",
                    missing.len(),
                    keys.len(),
                    missing.join(", ")
                );
            }
        }
        ViewCommand::Scan {
            server,
            name,
            prefix,
            start,
            end,
            limit,
            keys,
            read,
        } => {
            let mut query = read.query();
            match keys {
                Some(k) => query.push(("keys", k)),
                None => {
                    query.push(("limit", limit.to_string()));
                    for (param, v) in [("prefix", prefix), ("start", start), ("end", end)] {
                        if let Some(v) = v {
                            query.push((param, v));
                        }
                    }
                }
            }
            let answer: ViewRows = Client::new(&server)?.get_waiting_as(
                &paths::view_rows(&name),
                &query,
                read.wait_ms(),
            )?;
            if read.json {
                return print_json(&answer);
            }
            print_rows(&answer)?;
            // On stderr, so stdout holds only rows.
            if let Some(next) = &answer.next {
                eprintln!("# more: continue with --start {}", shell_quote(next));
            }
        }
        ViewCommand::Rebuild {
            server,
            name,
            spec,
            switch,
            timeout_ms,
            json,
        } => {
            let client = Client::new(&server)?;
            let spec = match spec {
                Some(s) => Some(
                    serde_json::from_str(&json_arg(&s)?)
                        .context("--spec is not JSON (give the spec, or @FILE)")?,
                ),
                None => None,
            };
            let started: Answer<Rebuilt> =
                client.post_as(&paths::view_rebuild(&name), &RebuildBody { spec }, &[], 0)?;
            let version = started.body.version;
            follow_progress(&client, &name, version, json, timeout_ms)?;
            // The version serving reads now: the new one after a switch, else the one that
            // was current (the rebuild does not change it).
            let current = if switch {
                let body = SwitchBody {
                    version,
                    percent: None,
                    timeout_ms: None,
                };
                let view: Answer<ViewOut> =
                    client.post_as(&paths::view_switch(&name), &body, &[], 0)?;
                view.body.current
            } else {
                client
                    .get_as::<ViewDetail>(&paths::view(&name), &[])?
                    .current
            };
            if json {
                return print_json(&json!({
                    "view": name, "version": version, "switched": switch, "current": current,
                }));
            }
            if switch {
                outln!("v{version} caught up; reads now go to it");
            } else {
                outln!(
                    "v{version} caught up; reads still go to the current version — \
                     `logbook view switch {name} {version}` moves them (or pass --switch)"
                );
            }
        }
        ViewCommand::Switch {
            server,
            name,
            version,
            percent,
            timeout_ms,
            json,
        } => {
            let body = SwitchBody {
                version,
                percent: Some(percent),
                timeout_ms: Some(timeout_ms),
            };
            let view: ViewOut = Client::new(&server)?
                .post_as(&paths::view_switch(&name), &body, &[], timeout_ms)?
                .body;
            if json {
                return print_json(&view);
            }
            outln!(
                "{name}: current v{}{}",
                view.current,
                rollout_text(view.rollout)
            );
        }
        ViewCommand::Drop {
            server,
            name,
            version,
            json,
        } => {
            let query: Vec<(&str, String)> = version
                .map(|v| ("version", v.to_string()))
                .into_iter()
                .collect();
            Client::new(&server)?.delete(&paths::view(&name), &query)?;
            if json {
                return print_json(&json!({ "dropped": name, "version": version }));
            }
            match version {
                Some(v) => outln!("dropped version {v} of view {name}"),
                None => outln!("dropped view {name}"),
            }
        }
    }
    Ok(())
}

fn rollout_text(rollout: Option<RolloutOut>) -> String {
    match rollout {
        None => String::new(),
        Some(r) => format!(", rollout: {}% of reads to v{}", r.percent, r.version),
    }
}

/// One version of `view status`: progress, lag, what it skipped or stopped on, where it is.
fn print_version(v: &StatusOut, current: bool) -> anyhow::Result<()> {
    outln!(
        "  v{}{}: {}/{} records applied, lag {} records / {} ms{}{}{}",
        v.version,
        if current { " (current)" } else { "" },
        v.progress.done,
        v.progress.total,
        v.lag_records,
        v.lag_ms,
        match v.skipped_records {
            0 => String::new(),
            n => format!(", {n} records skipped (key over the limit)"),
        },
        match (v.rows, &v.digest) {
            (Some(rows), Some(d)) => format!(", {rows} rows, digest {d}"),
            _ => String::new(),
        },
        v.error
            .as_ref()
            .map(|e| format!(", STOPPED: {e}"))
            .unwrap_or_default(),
    );
    let applied: Vec<String> = v.applied.iter().map(|(p, o)| format!("{p}:{o}")).collect();
    outln!(
        "      applied (partition:next offset) {}",
        applied.join(" ")
    );
    let gaps: Vec<String> = v
        .retention_gaps
        .iter()
        .map(|g| format!("{}:{}", g.partition, g.start))
        .collect();
    if !gaps.is_empty() {
        outln!(
            "      began after retention (partition:first offset) {} (records below were deleted before this version began)",
            gaps.join(" ")
        );
    }
    for b in &v.below_retention {
        outln!(
            "      below retention: partition {}: at offset {}, first retained {} (records in between were deleted unapplied; rebuild the view)",
            b.partition,
            b.position,
            b.start
        );
    }
    Ok(())
}

/// Rows as `key<TAB>value` lines.
fn print_rows(answer: &ViewRows) -> anyhow::Result<()> {
    for row in &answer.rows {
        outln!("{}\t{}", row.key, row.value);
    }
    Ok(())
}

/// Polls the status of `version` until it has applied its whole source, drawing a
/// progress bar on a terminal (records done/total, the server's rate and ETA).
fn follow_progress(
    client: &Client,
    name: &str,
    version: u64,
    quiet: bool,
    timeout_ms: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let bar = if quiet || !std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
    } else {
        ProgressBar::new(0)
    };
    let style =
        ProgressStyle::with_template("{prefix} [{bar:40}] {human_pos}/{human_len} records  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{name} v{version}"));
    loop {
        let st: ViewDetail = client.get_as(&paths::view(name), &[])?;
        let Some(v) = st.versions.iter().find(|v| v.version == version) else {
            bar.abandon();
            bail!("version {version} of view {name} is gone (dropped meanwhile?)");
        };
        if let Some(e) = &v.error {
            bar.abandon();
            bail!("version {version} of view {name} stopped: {e}");
        }
        let progress = &v.progress;
        bar.set_length(progress.total);
        bar.set_position(progress.done);
        let rate = progress.rate_per_s;
        bar.set_message(match progress.eta_s {
            Some(eta) => format!("{rate:.0} records/s, ETA {eta:.0} s"),
            None => format!("{rate:.0} records/s"),
        });
        if v.lag_records == 0 {
            bar.finish();
            return Ok(());
        }
        if Instant::now() >= deadline {
            bar.abandon();
            bail!(
                "version {version} of view {name} has not caught up within {timeout_ms} ms \
                 ({}/{} records applied); it keeps building on the server: `logbook view \
                 status {name}` shows its progress, --timeout-ms waits longer",
                progress.done,
                progress.total
            );
        }
        std::thread::sleep(POLL);
    }
}

/// `text` single-quoted for a POSIX shell, so a printed `--start` can be pasted as it is.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
