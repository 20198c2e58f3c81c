//! `logbook view ...`: derived views in a local data directory (no server).
//!
//! Each command opens the data directory (log and `views/` state), which starts the
//! processors of every view; they resume from their applied offsets. Reads (`get`, `scan`)
//! first wait, bounded by `--timeout-ms`, until the view has applied everything the log held
//! when the command started (a consistency token made from the end offsets), so a local
//! read sees every earlier append. `rebuild` shows a progress bar while the new version
//! catches up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use logbook_log::{Log, LogOptions, Position};
use logbook_views::{ConsistencyToken, ReadOptions, ReadResult, ScanRange, Views};
use serde_json::json;

use crate::DataDirArgs;

/// Derived views.
#[derive(Debug, clap::Subcommand)]
pub enum ViewCommand {
    /// Create a view from a JSON spec (see docs/views.md) and build it from offset 0.
    Create {
        #[command(flatten)]
        data: DataDirArgs,
        /// The view's name.
        name: String,
        /// The spec: JSON text, or @FILE.
        #[arg(long)]
        spec: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List views.
    List {
        #[command(flatten)]
        data: DataDirArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Applied offsets, lag, progress and (with --digest) the digest of each version.
    Status {
        #[command(flatten)]
        data: DataDirArgs,
        /// The view.
        name: String,
        /// Compute each version's digest (reads every row).
        #[arg(long)]
        digest: bool,
        /// Wait (up to --timeout-ms) for the versions to catch up first.
        #[arg(long)]
        wait: bool,
        /// Longest wait, ms.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read rows by key.
    Get {
        #[command(flatten)]
        data: DataDirArgs,
        /// The view.
        name: String,
        /// Keys (table: record key; index: value; aggregate: group key).
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Read rows in key order.
    Scan {
        #[command(flatten)]
        data: DataDirArgs,
        /// The view.
        name: String,
        /// Keys starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Keys from this one (a `next` of an earlier page).
        #[arg(long)]
        start: Option<String>,
        /// Keys before this one.
        #[arg(long)]
        end: Option<String>,
        /// Most rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Recompute a view from offset 0 into a new version while the current one serves.
    ///
    /// Reads stay on the current version until you switch to the new one: pass `--switch`,
    /// or run `logbook view switch NAME VERSION` later (a percentage rolls out gradually;
    /// switching back is the rollback).
    Rebuild {
        #[command(flatten)]
        data: DataDirArgs,
        /// The view.
        name: String,
        /// A new spec (JSON or @FILE); default: the current one.
        #[arg(long)]
        spec: Option<String>,
        /// Switch to the new version once it has caught up.
        #[arg(long)]
        switch: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Route reads to a version: all of them (switch, also the rollback) or a percentage.
    Switch {
        #[command(flatten)]
        data: DataDirArgs,
        /// The view.
        name: String,
        /// The version.
        version: u64,
        /// Percent of reads (by key hash); 100 switches.
        #[arg(long, default_value_t = 100)]
        percent: u8,
    },
    /// Drop a view (or one version of it) and free its state.
    Drop {
        #[command(flatten)]
        data: DataDirArgs,
        /// The view.
        name: String,
        /// Only this version (not the current one).
        #[arg(long)]
        version: Option<u64>,
    },
}

/// Read options of `get` and `scan`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadArgs {
    /// A consistency token to wait for (default: everything in the log when the command started).
    #[arg(long)]
    token: Option<String>,
    /// Longest wait for the token, ms.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Opens the log (which must exist) and the views.
pub fn open(data: &DataDirArgs) -> anyhow::Result<(Arc<Log>, Views)> {
    let options = LogOptions {
        create_if_missing: false,
        ..LogOptions::default()
    };
    let log = Arc::new(
        Log::open_with(&data.data_dir, options)
            .with_context(|| format!("opening data directory {}", data.data_dir.display()))?,
    );
    let views =
        Views::open(log.clone(), &data.data_dir.join("views")).context("opening the views")?;
    Ok((log, views))
}

fn read_spec(spec: &str) -> anyhow::Result<Vec<u8>> {
    match spec.strip_prefix('@') {
        Some(path) => std::fs::read(PathBuf::from(path)).with_context(|| format!("reading {path}")),
        None => Ok(spec.as_bytes().to_vec()),
    }
}

/// A token naming every record the view's source holds now.
fn token_now(log: &Log, views: &Views, name: &str) -> anyhow::Result<String> {
    let info = views.info_of(name)?;
    let stream = log.stream(&info.spec.source)?;
    let positions: Vec<Position> = stream
        .partitions()
        .iter()
        .filter(|p| p.end_offset() > 0)
        .map(|p| Position {
            partition: p.id(),
            offset: p.end_offset() - 1,
        })
        .collect();
    Ok(ConsistencyToken::from_positions(&stream, &positions).encode()?)
}

fn print_read(r: &ReadResult, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
        return;
    }
    for row in &r.rows {
        println!("{}\t{}", row.key, row.value);
    }
    if let Some(n) = &r.next {
        println!("# next: {n:?}");
    }
    println!("# version {}, applied {:?}", r.version, r.applied);
}

/// Runs a `logbook view` command.
pub fn run(cmd: ViewCommand) -> anyhow::Result<()> {
    match cmd {
        ViewCommand::Create {
            data,
            name,
            spec,
            json,
        } => {
            let (_log, views) = open(&data)?;
            let info = views.create(&name, &read_spec(&spec)?)?;
            if json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                println!("created view {name} (version {})", info.current);
            }
            // Let the new view catch up before exiting (its processors stop with the process).
            views.wait_caught_up(&name, None, Duration::from_secs(600))?;
        }
        ViewCommand::List { data, json } => {
            let (_log, views) = open(&data)?;
            let list = views.list();
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                for v in list {
                    let kind = serde_json::to_value(v.spec.kind)
                        .ok()
                        .and_then(|k| k.as_str().map(str::to_string))
                        .unwrap_or_default();
                    let versions: Vec<String> =
                        v.versions.iter().map(|n| format!("v{n}")).collect();
                    println!(
                        "{}\t{kind}\tsource {}\tcurrent v{}\tversions {}",
                        v.name,
                        v.spec.source,
                        v.current,
                        versions.join(",")
                    );
                }
            }
        }
        ViewCommand::Status {
            data,
            name,
            digest,
            wait,
            timeout_ms,
            json,
        } => {
            let (_log, views) = open(&data)?;
            if wait {
                for v in views.info_of(&name)?.versions {
                    views.wait_caught_up(&name, Some(v), Duration::from_millis(timeout_ms))?;
                }
            }
            let st = views.status(&name, digest)?;
            if json {
                println!("{}", serde_json::to_string(&st)?);
            } else {
                let rollout = st.rollout.map_or_else(
                    || "none".to_string(),
                    |r| format!("{}% of reads to v{}", r.percent, r.version),
                );
                println!("{}: current v{}, rollout {rollout}", st.name, st.current);
                for v in &st.versions {
                    println!(
                        "  v{}{}: applied {:?}, lag {} records / {} ms, {}/{} records{}{}",
                        v.version,
                        if v.current { " (current)" } else { "" },
                        v.applied,
                        v.lag_records,
                        v.lag_ms,
                        v.progress.done,
                        v.progress.total,
                        v.digest
                            .map(|d| format!(", digest {:032x} over {} rows", d.hash, d.rows))
                            .unwrap_or_default(),
                        v.error
                            .as_ref()
                            .map(|e| format!(", ERROR {e}"))
                            .unwrap_or_default(),
                    );
                }
            }
        }
        ViewCommand::Get {
            data,
            name,
            keys,
            read,
        } => {
            let (log, views) = open(&data)?;
            let token = match read.token {
                Some(t) => t,
                None => token_now(&log, &views, &name)?,
            };
            let opts = ReadOptions {
                token: Some(token),
                timeout_ms: read.timeout_ms,
            };
            let r = views.get_many(&name, &keys, &opts)?;
            print_read(&r, read.json);
        }
        ViewCommand::Scan {
            data,
            name,
            prefix,
            start,
            end,
            limit,
            read,
        } => {
            let (log, views) = open(&data)?;
            let token = match read.token {
                Some(t) => t,
                None => token_now(&log, &views, &name)?,
            };
            let opts = ReadOptions {
                token: Some(token),
                timeout_ms: read.timeout_ms,
            };
            let range = ScanRange {
                prefix,
                start,
                end,
                limit,
            };
            print_read(&views.scan(&name, &range, &opts)?, read.json);
        }
        ViewCommand::Rebuild {
            data,
            name,
            spec,
            switch,
            json,
        } => {
            let (_log, views) = open(&data)?;
            let spec = spec.map(|s| read_spec(&s)).transpose()?;
            let version = views.rebuild(&name, spec.as_deref())?;
            let bar = if json {
                ProgressBar::hidden()
            } else {
                ProgressBar::new(0)
            };
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} records ({per_sec}, ETA {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(format!("rebuilding {name} v{version}"));
            loop {
                let st = views.status(&name, false)?;
                let Some(v) = st.versions.iter().find(|v| v.version == version) else {
                    bail!("version {version} disappeared");
                };
                if let Some(e) = &v.error {
                    bail!("rebuild failed: {e}");
                }
                bar.set_length(v.progress.total);
                bar.set_position(v.progress.done);
                if v.lag_records == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish();
            if switch {
                views.switch(&name, version, 60_000)?;
            }
            let st = views.status(&name, false)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(
                        &json!({"version": version, "switched": switch, "status": st})
                    )?
                );
            } else {
                if switch {
                    println!("v{version} caught up; reads now go to it");
                } else {
                    println!(
                        "v{version} caught up; reads still go to the current version — \
                         `logbook view switch {name} {version}` moves them (or pass --switch)"
                    );
                }
            }
        }
        ViewCommand::Switch {
            data,
            name,
            version,
            percent,
        } => {
            let (_log, views) = open(&data)?;
            views.rollout(&name, version, percent, 60_000)?;
            println!("{}", serde_json::to_string(&views.info_of(&name)?)?);
        }
        ViewCommand::Drop {
            data,
            name,
            version,
        } => {
            let (_log, views) = open(&data)?;
            match version {
                Some(v) => views.drop_version(&name, v)?,
                None => views.drop_view(&name)?,
            }
        }
    }
    Ok(())
}
