//! `logbook txn`: an interactive transaction shell over the HTTP API.
//!
//! Reads one command per line from stdin, so it works at a terminal (with a prompt) and in
//! scripts (`printf '...' | logbook txn`). Every command prints one result on stdout (a
//! scan prints its rows, then a count); errors go to stderr with the server's code, and a
//! retryable one (`serialization_failure`) says to run the transaction again. The exit
//! status is non-zero if any command failed.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

use crate::client::{Client, ServerArgs, print_json, problem_of, segment};

/// Options of `logbook txn`.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP_EXAMPLES)]
pub struct TxnArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Print each result as one line of JSON (errors: the problem document on stderr).
    #[arg(long)]
    pub json: bool,
}

const HELP_EXAMPLES: &str = "\
Commands (one per line):
  begin [read_committed|snapshot|serializable] [read_only]   default: serializable
  get KEY [for_update]        read (recorded for SSI; for_update conflicts like a write)
  scan [PREFIX] [limit N]     keys in order (the range is recorded: phantoms are caught)
  put KEY JSON                write a JSON value (buffered until commit)
  del KEY                     delete
  incr KEY N                  add N to an integer at commit (increments do not conflict)
  commit [REQUEST-ID]         commit; a retry with the same request id commits once
  abort                       discard the transaction
  help, quit
Outside a transaction, get and scan read the latest committed values.

Examples:
  printf 'begin serializable\\nincr acct/1 5\\nget acct/1\\ncommit\\n' | logbook txn
  logbook txn --server http://db1:7700";

/// What the shell does after a command.
enum Flow {
    Continue,
    Quit,
}

struct Shell {
    client: Client,
    json: bool,
    /// The open transaction's handle.
    txn: Option<String>,
}

/// Runs the shell until `quit` or the end of stdin.
pub fn run(args: TxnArgs) -> anyhow::Result<()> {
    let mut shell = Shell {
        client: Client::new(&args.server),
        json: args.json,
        txn: None,
    };
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        outln!(
            "logbook transaction shell on {} — `help` lists the commands",
            shell.client.base()
        );
    }
    let mut failed = 0usize;
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    loop {
        if interactive {
            let prompt = match &shell.txn {
                Some(t) => format!("txn {t}> "),
                None => "txn> ".to_string(),
            };
            print!("{prompt}");
            std::io::stdout().flush()?;
        }
        line.clear();
        if stdin.read_line(&mut line).context("reading stdin")? == 0 {
            break;
        }
        let command = line.trim();
        if command.is_empty() || command.starts_with('#') {
            continue;
        }
        match shell.exec(command) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Quit) => break,
            Err(e) => {
                failed += 1;
                shell.report(&e);
            }
        }
        // A script driving the shell through a pipe sees each answer at once.
        std::io::stdout().flush()?;
    }
    if let Some(txn) = shell.txn.take() {
        shell.client.post(
            &format!("/v1/txns/{}/abort", segment(&txn)),
            &json!({}),
            &[],
        )?;
        eprintln!("aborted transaction {txn}: the input ended before commit");
    }
    if failed > 0 {
        bail!("{failed} command(s) failed (see above)");
    }
    Ok(())
}

/// The first whitespace-separated word and the rest, trimmed.
fn word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim()),
        None => (text, ""),
    }
}

impl Shell {
    fn txn_path(&self, txn: &str) -> String {
        format!("/v1/txns/{}", segment(txn))
    }

    fn open(&self, command: &str) -> anyhow::Result<String> {
        self.txn
            .clone()
            .ok_or_else(|| anyhow!("{command}: no open transaction; `begin` first"))
    }

    fn exec(&mut self, line: &str) -> anyhow::Result<Flow> {
        let (command, rest) = word(line);
        match command {
            "begin" => self.begin(rest)?,
            "get" => self.get(rest)?,
            "scan" => self.scan(rest)?,
            "put" => {
                let (key, value) = word(rest);
                if key.is_empty() || value.is_empty() {
                    bail!("usage: put KEY JSON   e.g. put acct/1 {{\"balance\": 5}}");
                }
                let value: Value = serde_json::from_str(value)
                    .with_context(|| format!("put: the value is not JSON: {value}"))?;
                let txn = self.open("put")?;
                self.write_op(|c| {
                    c.client.put(
                        &format!("{}/kv/{}", c.txn_path(&txn), segment(key)),
                        &json!({ "value": value }),
                    )
                })?;
            }
            "del" | "delete" => {
                let (key, extra) = word(rest);
                if key.is_empty() || !extra.is_empty() {
                    bail!("usage: del KEY");
                }
                let txn = self.open("del")?;
                self.write_op(|c| {
                    c.client
                        .delete(&format!("{}/kv/{}", c.txn_path(&txn), segment(key)), &[])
                })?;
            }
            "incr" => {
                let (key, by) = word(rest);
                let by: i64 = by.parse().map_err(|_| {
                    anyhow!("usage: incr KEY N   (N an integer, e.g. incr acct/1 5)")
                })?;
                let txn = self.open("incr")?;
                self.write_op(|c| {
                    c.client.post(
                        &format!("{}/kv/{}/increment", c.txn_path(&txn), segment(key)),
                        &json!({ "by": by }),
                        &[],
                    )
                })?;
            }
            "commit" => self.commit(rest)?,
            "abort" | "rollback" => {
                let txn = self.open("abort")?;
                self.txn = None;
                self.client
                    .post(&format!("{}/abort", self.txn_path(&txn)), &json!({}), &[])?;
                if self.json {
                    print_json(&json!({ "aborted": txn }))?;
                } else {
                    outln!("aborted {txn}");
                }
            }
            "help" | "?" => outln!("{HELP_EXAMPLES}"),
            "quit" | "exit" => return Ok(Flow::Quit),
            other => bail!("unknown command {other:?}; `help` lists the commands"),
        }
        Ok(Flow::Continue)
    }

    fn begin(&mut self, rest: &str) -> anyhow::Result<()> {
        if let Some(t) = &self.txn {
            bail!("transaction {t} is open: commit or abort it first");
        }
        let mut body = json!({});
        for option in rest.split_whitespace() {
            match option {
                "read_committed" | "snapshot" | "serializable" => body["isolation"] = json!(option),
                "read_only" => body["read_only"] = json!(true),
                other => bail!(
                    "begin: unknown option {other:?}; use read_committed, snapshot or \
                     serializable, and optionally read_only"
                ),
            }
        }
        let begun = self.client.post("/v1/txns", &body, &[])?.body;
        let txn = begun["txn"]
            .as_str()
            .context("the server's answer names no transaction")?
            .to_string();
        self.txn = Some(txn.clone());
        if self.json {
            return print_json(&begun);
        }
        outln!(
            "begun {txn} ({}{}, snapshot {})",
            begun["isolation"].as_str().unwrap_or_default(),
            if begun["read_only"] == json!(true) {
                ", read only"
            } else {
                ""
            },
            begun["snapshot"]
        );
        Ok(())
    }

    fn get(&mut self, rest: &str) -> anyhow::Result<()> {
        let (key, option) = word(rest);
        let for_update = match option {
            "" => false,
            "for_update" => true,
            _ => bail!("usage: get KEY [for_update]"),
        };
        if key.is_empty() {
            bail!("usage: get KEY [for_update]");
        }
        let (path, query) = match &self.txn {
            Some(txn) => (
                format!("{}/kv/{}", self.txn_path(txn), segment(key)),
                if for_update {
                    vec![("for_update", "true".to_string())]
                } else {
                    Vec::new()
                },
            ),
            None if for_update => bail!("get ... for_update: no open transaction; `begin` first"),
            None => (format!("/v1/kv/{}", segment(key)), Vec::new()),
        };
        match self.in_txn(|c| c.client.get(&path, &query)) {
            Ok(row) => {
                if self.json {
                    return print_json(&row);
                }
                outln!("{}", row_text(&row));
            }
            Err(e) if problem_of(&e).is_some_and(|p| p.problem.code == "key_not_found") => {
                if self.json {
                    return print_json(&json!({ "key": key, "value": null, "found": false }));
                }
                outln!("{key} not found");
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn scan(&mut self, rest: &str) -> anyhow::Result<()> {
        let words: Vec<&str> = rest.split_whitespace().collect();
        let (prefix, limit) = match words.as_slice() {
            [] => (None, None),
            ["limit", n] => (None, Some(*n)),
            [p] => (Some(*p), None),
            [p, "limit", n] => (Some(*p), Some(*n)),
            _ => bail!("usage: scan [PREFIX] [limit N]"),
        };
        let mut query = Vec::new();
        if let Some(p) = prefix {
            query.push(("prefix", p.to_string()));
        }
        if let Some(n) = limit {
            let n: usize = n
                .parse()
                .map_err(|_| anyhow!("scan: limit {n:?} is not a number"))?;
            query.push(("limit", n.to_string()));
        }
        let path = match &self.txn {
            Some(txn) => format!("{}/kv", self.txn_path(txn)),
            None => "/v1/kv".to_string(),
        };
        let answer = self.in_txn(|c| c.client.get(&path, &query))?;
        if self.json {
            return print_json(&answer);
        }
        let rows = answer["rows"].as_array().map_or(&[][..], Vec::as_slice);
        for row in rows {
            outln!("{}", row_text(row));
        }
        outln!("({} rows)", rows.len());
        Ok(())
    }

    fn commit(&mut self, rest: &str) -> anyhow::Result<()> {
        let (request_id, extra) = word(rest);
        if !extra.is_empty() {
            bail!("usage: commit [REQUEST-ID]");
        }
        let txn = self.open("commit")?;
        // The server ends the transaction whatever the outcome.
        self.txn = None;
        let headers: Vec<(&str, &str)> = if request_id.is_empty() {
            Vec::new()
        } else {
            vec![("Idempotency-Key", request_id)]
        };
        let done = self
            .client
            .post(
                &format!("{}/commit", self.txn_path(&txn)),
                &json!({}),
                &headers,
            )?
            .body;
        if self.json {
            return print_json(&done);
        }
        let mut text = match done["offset"].as_u64() {
            Some(offset) => format!("committed {txn} at offset {offset}"),
            None => format!("committed {txn} (it wrote nothing)"),
        };
        if let Some(incremented) = done["incremented"].as_object() {
            for (key, value) in incremented {
                text.push_str(&format!("; {key} = {value}"));
            }
        }
        if done["duplicate"] == json!(true) {
            text.push_str("; duplicate: this request id had committed already, nothing new");
        }
        if let Some(token) = done["token"].as_str() {
            text.push_str(&format!("; token {token}"));
        }
        outln!("{text}");
        Ok(())
    }

    /// A buffered write: prints `ok` on success.
    fn write_op(
        &mut self,
        op: impl FnOnce(&Self) -> anyhow::Result<crate::client::Answer>,
    ) -> anyhow::Result<()> {
        self.in_txn(op)?;
        if self.json {
            return print_json(&json!({ "ok": true }));
        }
        outln!("ok");
        Ok(())
    }

    /// Runs an operation of the open transaction; forgets the transaction when the server
    /// says it has ended (a retryable conflict aborts it, an idle one expires).
    fn in_txn<T>(&mut self, op: impl FnOnce(&Self) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let result = op(self);
        if let Err(e) = &result
            && let Some(p) = problem_of(e)
            && (p.problem.retryable == Some(true)
                || matches!(
                    p.problem.code.as_str(),
                    "unknown_transaction" | "transaction_expired" | "serialization_failure"
                ))
        {
            self.txn = None;
        }
        result
    }

    /// Prints a failed command's error on stderr: the server's code and detail, and what to
    /// do about a retryable one.
    fn report(&self, e: &anyhow::Error) {
        let Some(p) = problem_of(e) else {
            eprintln!("error: {e:#}");
            return;
        };
        if self.json {
            eprintln!(
                "{}",
                serde_json::to_string(&p.problem).unwrap_or_else(|_| p.to_string())
            );
            return;
        }
        eprintln!("error: {p}");
        if p.problem.retryable == Some(true) || p.problem.code == "serialization_failure" {
            eprintln!(
                "  retryable: the transaction was aborted by a conflict; retry the transaction \
                 (run it again from `begin`)"
            );
        } else if matches!(
            p.problem.code.as_str(),
            "unknown_transaction" | "transaction_expired"
        ) {
            eprintln!("  the transaction is gone; `begin` a new one");
        }
    }
}

/// `KEY = VALUE (version N)`; a value the transaction wrote itself has no version yet.
fn row_text(row: &Value) -> String {
    let version = match row["version"].as_u64() {
        Some(v) => format!("version {v}"),
        None => "written by this transaction".to_string(),
    };
    format!(
        "{} = {} ({version})",
        row["key"].as_str().unwrap_or_default(),
        row["value"]
    )
}
