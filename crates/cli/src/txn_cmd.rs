//! `logbook txn`: an interactive transaction shell over the HTTP API.
//!
//! Reads one command per line from stdin, so it works at a terminal (with a prompt) and in
//! scripts (`printf '...' | logbook txn`). Every command prints one result on stdout (a
//! scan prints its rows, then a count); errors go to stderr with the server's code, and a
//! retryable one (`serialization_failure`) says to run the transaction again. The exit
//! status is non-zero if any command failed, or if the input ended (or stdout closed) with a
//! transaction open: it is aborted then, and its writes are discarded.
//!
//! As in psql, a command that fails inside a transaction marks the transaction failed: later
//! commands are refused until `abort`, and `commit` aborts it and says so, so a script never
//! commits half of what it meant to (a malformed `put` between two others).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, anyhow, bail};
use serde_json::json;

use logbook_api::txns::{BeginBody, Begun, Committed, IncrementBody, PutBody, Row, Rows};
use logbook_api::{Problem, ProblemCode, paths};

use crate::client::{
    ApiProblem, Client, Empty, ServerArgs, count, is_problem, print_json, problem_of,
};

/// The codes that say the shell's open transaction has ended on the server.
const ENDED: &[ProblemCode] = &[
    ProblemCode::UnknownTransaction,
    ProblemCode::TransactionExpired,
    ProblemCode::TransactionCommitted,
    ProblemCode::TransactionAborted,
];

/// Options of `logbook txn`.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP_EXAMPLES)]
pub struct TxnArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Print each result as one line of JSON (errors: one JSON object per error on stderr:
    /// the server's problem document, or `{"code": "client_error", "detail": ...}`).
    #[arg(long)]
    pub json: bool,
}

const HELP_EXAMPLES: &str = "\
Commands (one per line):
  begin [read_committed|snapshot|serializable] [read_only]   default: serializable
  get KEY [for_update]        read (recorded for SSI; for_update conflicts like a write)
  scan [PREFIX] [limit N] [start KEY]
                              keys in order, N (default 100, at most 9999) at a time; when
                              more follow it says so: `(more: scan ... start KEY)`
                              (the range is recorded: phantoms are caught)
  put KEY JSON                write a JSON value (buffered until commit)
  del KEY                     delete
  incr KEY N                  add N to an integer at commit (increments do not conflict)
  commit [REQUEST-ID]         commit; a retry with the same request id commits once (give
                              one: if the answer is lost, only then is a retry safe). After
                              a failed command in the transaction, commit aborts it instead
                              (as psql does) and says so
  abort                       discard the transaction
  help, quit
A KEY is one word without whitespace, or double-quoted: put \"a b\" 1 (inside quotes, \\\" is
a quote and \\\\ a backslash). Keys cannot be empty.
Outside a transaction, get and scan read the latest committed values.
A transaction still open when the input ends (or stdout closes) is aborted, and the exit
status is non-zero.

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
    /// Why the open transaction failed (the first command that failed in it), if one did.
    failed: Option<String>,
}

/// Runs the shell until `quit` or the end of stdin.
pub fn run(args: TxnArgs) -> anyhow::Result<()> {
    let mut shell = Shell {
        client: Client::new(&args.server)?,
        json: args.json,
        txn: None,
        failed: None,
    };
    let mut failed = 0usize;
    // Whatever ends the loop (end of input, `quit`, a closed stdout), an open transaction
    // is aborted below, so it does not hold its locks on the server until it expires.
    let looped = shell.repl(&mut failed);
    let mut left_open = false;
    if let Some(txn) = shell.txn.take() {
        left_open = true;
        match shell.client.post(&paths::txn_abort(&txn), &Empty {}, &[]) {
            Ok(_) => eprintln!(
                "aborted transaction {txn}: the input ended before commit; nothing it wrote \
                 was kept"
            ),
            // Already gone (expired, or aborted by a conflict): nothing to abort.
            Err(e)
                if problem_of(&e).is_some_and(|p| {
                    p.is_any(&[
                        ProblemCode::UnknownTransaction,
                        ProblemCode::TransactionExpired,
                        ProblemCode::TransactionAborted,
                    ])
                }) => {}
            Err(e) => {
                failed += 1;
                shell.report(&e.context(format!("aborting the open transaction {txn}")));
            }
        }
    }
    looped?;
    if failed > 0 || left_open {
        let mut what = Vec::new();
        if failed > 0 {
            what.push(format!("{failed} command(s) failed (see above)"));
        }
        if left_open {
            what.push("the input ended with a transaction open (aborted)".to_string());
        }
        let detail = what.join("; ");
        if shell.json {
            // Main prints a problem document as JSON: the summary stays parseable.
            return Err(client_problem("txn_failed", &detail).into());
        }
        bail!("{detail}");
    }
    Ok(())
}

/// A problem document for an error found by the client itself (`--json` output).
fn client_problem(code: &str, detail: &str) -> ApiProblem {
    ApiProblem {
        status: 0,
        problem: Problem {
            type_: format!("urn:logbook:problem:{code}"),
            code: code.to_string(),
            title: "error in the client".to_string(),
            status: 0,
            detail: detail.to_string(),
            field: None,
            retryable: None,
            location: None,
            error_code: None,
            message: None,
        },
    }
}

/// Whether an error is a write to a closed stdout (`| head -1`).
fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The first word and the rest, trimmed. A word starting with `"` runs to the closing quote
/// (`\"` a quote, `\\` a backslash), so keys may hold whitespace.
fn word(text: &str) -> anyhow::Result<(String, &str)> {
    let text = text.trim_start();
    let Some(quoted) = text.strip_prefix('"') else {
        return Ok(match text.find(char::is_whitespace) {
            Some(i) => (text[..i].to_string(), text[i..].trim()),
            None => (text.to_string(), ""),
        });
    };
    let mut out = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let rest = &quoted[i + 1..];
                if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
                    bail!("a quoted word must end at its closing quote: {text}");
                }
                return Ok((out, rest.trim()));
            }
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\'))) => out.push(e),
                _ => bail!("inside quotes only \\\" and \\\\ are escapes: {text}"),
            },
            other => out.push(other),
        }
    }
    bail!("unclosed quote: {text}")
}

/// A key: one word, which must be there; `""` is the empty key (a key like any other).
fn key_word<'a>(text: &'a str, usage: &str) -> anyhow::Result<(String, &'a str)> {
    if text.trim().is_empty() {
        bail!("{usage}   (the key is missing; `\"\"` is the empty key)");
    }
    word(text)
}

impl Shell {
    /// Reads and runs commands until the end of input, `quit`, or a closed stdout.
    fn repl(&mut self, failed: &mut usize) -> anyhow::Result<()> {
        let interactive = std::io::stdin().is_terminal();
        if interactive {
            outln!(
                "logbook transaction shell on {} — `help` lists the commands",
                self.client.base()
            );
        }
        let mut stdin = std::io::stdin().lock();
        let mut line = String::new();
        loop {
            if interactive {
                let prompt = match &self.txn {
                    Some(t) => format!("txn {t}> "),
                    None => "txn> ".to_string(),
                };
                let mut out = std::io::stdout().lock();
                write!(out, "{prompt}")?;
                out.flush()?;
            }
            line.clear();
            if stdin.read_line(&mut line).context("reading stdin")? == 0 {
                return Ok(());
            }
            let command = line.trim();
            if command.is_empty() || command.starts_with('#') {
                continue;
            }
            match self.exec(command) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Quit) => return Ok(()),
                Err(e) if stdout_closed(&e) => return Err(e),
                Err(e) => {
                    *failed += 1;
                    self.report(&e);
                    if self.txn.is_some() && self.failed.is_none() {
                        self.failed = Some(format!("`{command}`: {e:#}"));
                        if !self.json {
                            eprintln!(
                                "  the transaction has failed: `commit` will abort it; \
                                 `abort` to end it"
                            );
                        }
                    }
                }
            }
            // A script driving the shell through a pipe sees each answer at once.
            std::io::stdout().flush()?;
        }
    }

    fn open(&self, command: &str) -> anyhow::Result<String> {
        self.txn
            .clone()
            .ok_or_else(|| anyhow!("{command}: no open transaction; `begin` first"))
    }

    fn exec(&mut self, line: &str) -> anyhow::Result<Flow> {
        let (command, rest) = word(line)?;
        if let (Some(txn), Some(why)) = (&self.txn, &self.failed)
            && !matches!(
                command.as_str(),
                "commit" | "abort" | "rollback" | "help" | "?" | "quit" | "exit"
            )
        {
            bail!(
                "transaction {txn} has failed ({why}); commands are refused until `abort` \
                 (or `commit`, which aborts it)"
            );
        }
        match command.as_str() {
            "begin" => self.begin(rest)?,
            "get" => self.get(rest)?,
            "scan" => self.scan(rest)?,
            "put" => {
                let usage = "usage: put KEY JSON   e.g. put acct/1 {\"balance\": 5}";
                let (key, value) = key_word(rest, usage)?;
                let key = key.as_str();
                if value.is_empty() {
                    bail!("{usage}");
                }
                let value = serde_json::from_str(value)
                    .with_context(|| format!("put: the value is not JSON: {value}"))?;
                let body = PutBody {
                    value,
                    if_version: None,
                    if_absent: None,
                };
                let txn = self.open("put")?;
                self.write_op(|c| c.client.put(&paths::txn_key(&txn, key), &body))?;
            }
            "del" | "delete" => {
                let (key, extra) = key_word(rest, "usage: del KEY")?;
                let key = key.as_str();
                if !extra.is_empty() {
                    bail!("usage: del KEY");
                }
                let txn = self.open("del")?;
                self.write_op(|c| c.client.delete(&paths::txn_key(&txn, key), &[]))?;
            }
            "incr" => {
                let (key, by) = key_word(rest, "usage: incr KEY N")?;
                let key = key.as_str();
                let by: i64 = by.parse().map_err(|_| {
                    anyhow!("usage: incr KEY N   (N an integer, e.g. incr acct/1 5)")
                })?;
                let txn = self.open("incr")?;
                self.write_op(|c| {
                    c.client
                        .post(&paths::txn_increment(&txn, key), &IncrementBody { by }, &[])
                })?;
            }
            "commit" => self.commit(rest)?,
            "abort" | "rollback" => {
                let txn = self.open("abort")?;
                self.txn = None;
                self.failed = None;
                self.client.post(&paths::txn_abort(&txn), &Empty {}, &[])?;
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
        let mut body = BeginBody::default();
        for option in rest.split_whitespace() {
            match option {
                "read_only" => body.read_only = Some(true),
                other => {
                    body.isolation = Some(other.parse().map_err(|_| {
                        anyhow!(
                            "begin: unknown option {other:?}; use read_committed, snapshot or \
                             serializable, and optionally read_only"
                        )
                    })?);
                }
            }
        }
        let begun: Begun = self.client.post_as(&paths::txns(), &body, &[], 0)?.body;
        let txn = begun.txn.clone();
        self.txn = Some(txn.clone());
        self.failed = None;
        if self.json {
            return print_json(&begun);
        }
        outln!(
            "begun {txn} ({}{}, snapshot {})",
            begun.isolation,
            if begun.read_only { ", read only" } else { "" },
            begun.snapshot
        );
        Ok(())
    }

    fn get(&mut self, rest: &str) -> anyhow::Result<()> {
        let (key, option) = key_word(rest, "usage: get KEY [for_update]")?;
        let key = key.as_str();
        let for_update = match option {
            "" => false,
            "for_update" => true,
            _ => bail!("usage: get KEY [for_update]"),
        };
        let (path, query) = match &self.txn {
            Some(txn) => (
                paths::txn_key(txn, key),
                if for_update {
                    vec![("for_update", "true".to_string())]
                } else {
                    Vec::new()
                },
            ),
            None if for_update => bail!("get ... for_update: no open transaction; `begin` first"),
            None => (paths::kv_key(key), Vec::new()),
        };
        match self.in_txn(|c| c.client.get_as::<Row>(&path, &query)) {
            Ok(row) => {
                if self.json {
                    return print_json(&row);
                }
                outln!("{}", row_text(&row));
            }
            Err(e) if is_problem(&e, ProblemCode::KeyNotFound) => {
                if self.json {
                    return print_json(&json!({ "key": key, "value": null, "found": false }));
                }
                outln!("{} not found", quote(key));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn scan(&mut self, rest: &str) -> anyhow::Result<()> {
        const USAGE: &str = "usage: scan [PREFIX] [limit N] [start KEY]";
        let (mut prefix, mut limit, mut start) = (None, 100usize, None);
        let mut rest = rest.trim();
        let mut first = true;
        while !rest.is_empty() {
            let (w, after) = word(rest)?;
            match w.as_str() {
                "limit" => {
                    let (n, after) = word(after)?;
                    limit = n
                        .parse()
                        .map_err(|_| anyhow!("scan: limit {n:?} is not a number; {USAGE}"))?;
                    rest = after;
                }
                "start" => {
                    let (k, after) = key_word(after, USAGE)?;
                    start = Some(k);
                    rest = after;
                }
                _ if first => {
                    prefix = Some(w);
                    rest = after;
                }
                _ => bail!("{USAGE}"),
            }
            first = false;
        }
        if limit == 0 || limit >= logbook_api::limits::SCAN_ROWS_MAX {
            bail!(
                "scan: limit must be 1..={}",
                logbook_api::limits::SCAN_ROWS_MAX - 1
            );
        }
        // One row more than asked tells whether more follow (the server gives no `next`).
        // The server takes a prefix or a start, not both: with both, read from the start
        // and stop at the first key outside the prefix.
        let mut query = vec![("limit", (limit + 1).to_string())];
        match (&prefix, &start) {
            (Some(p), None) => query.push(("prefix", p.clone())),
            (Some(p), Some(s)) => query.push(("start", s.max(p).clone())),
            (None, Some(s)) => query.push(("start", s.clone())),
            (None, None) => {}
        }
        let path = match &self.txn {
            Some(txn) => paths::txn_kv(txn),
            None => paths::kv(),
        };
        let answer: Rows = self.in_txn(|c| c.client.get_as(&path, &query))?;
        let mut rows: Vec<Row> = answer
            .rows
            .into_iter()
            .take_while(|r| prefix.as_deref().is_none_or(|p| r.key.starts_with(p)))
            .collect();
        let next = if rows.len() > limit {
            rows.truncate(limit + 1);
            rows.pop().map(|r| r.key)
        } else {
            None
        };
        let rows = Rows {
            rows,
            next,
            token: None,
        };
        if self.json {
            return print_json(&rows);
        }
        let Rows { rows, next, .. } = rows;
        for row in &rows {
            outln!("{}", row_text(row));
        }
        match &next {
            Some(key) => {
                let mut again = String::from("scan");
                if let Some(p) = &prefix {
                    again.push(' ');
                    again.push_str(&quote(p));
                }
                again.push_str(&format!(" limit {limit} start {}", quote(key)));
                outln!("({}; more: {again})", count(rows.len(), "row", "rows"));
            }
            None => outln!("({})", count(rows.len(), "row", "rows")),
        }
        Ok(())
    }

    fn commit(&mut self, rest: &str) -> anyhow::Result<()> {
        let (request_id, extra) = word(rest)?;
        let request_id = request_id.as_str();
        if !extra.is_empty() {
            bail!("usage: commit [REQUEST-ID]");
        }
        let txn = self.open("commit")?;
        // The server ends the transaction whatever the outcome.
        self.txn = None;
        if let Some(why) = self.failed.take() {
            let aborted = self.client.post(&paths::txn_abort(&txn), &Empty {}, &[]);
            let outcome = match aborted {
                Ok(_) => "it was aborted".to_string(),
                Err(e) if problem_of(&e).is_some() => {
                    "it had already ended on the server".to_string()
                }
                Err(e) => format!("aborting it got no answer ({e:#}); it expires unused"),
            };
            bail!(
                "commit: transaction {txn} was not committed: a command inside it failed \
                 ({why}), so {outcome}; nothing it wrote was kept"
            );
        }
        let headers: Vec<(&str, &str)> = if request_id.is_empty() {
            Vec::new()
        } else {
            vec![("Idempotency-Key", request_id)]
        };
        let done: Committed =
            match self
                .client
                .post_as(&paths::txn_commit(&txn), &Empty {}, &headers, 0)
            {
                Ok(answer) => answer.body,
                Err(e) if problem_of(&e).is_some() => return Err(e),
                // No answer: the commit may or may not have happened.
                Err(e) => {
                    let advice = if request_id.is_empty() {
                        "it was sent without a request id, so running it again could commit \
                     twice: check the data; next time give one (`commit REQUEST-ID`)"
                            .to_string()
                    } else {
                        format!(
                            "once the server is back, run `begin` with the same writes and \
                         `commit {request_id}` again: with the same request id it commits \
                         at most once"
                        )
                    };
                    return Err(e.context(format!(
                        "commit of {txn}: no answer, so the outcome is unknown; {advice}"
                    )));
                }
            };
        if self.json {
            return print_json(&done);
        }
        outln!(
            "{}",
            crate::commit_cmd::committed_text(&done, &txn, request_id)
        );
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
                || p.is_any(ENDED)
                || p.is_any(&[ProblemCode::SerializationFailure]))
        {
            self.txn = None;
        }
        result
    }

    /// Prints a failed command's error on stderr: the server's code and detail, and what to
    /// do about a retryable one.
    fn report(&self, e: &anyhow::Error) {
        let Some(p) = problem_of(e) else {
            if self.json {
                let doc = json!({ "code": "client_error", "detail": format!("{e:#}") });
                eprintln!("{doc}");
            } else {
                eprintln!("error: {e:#}");
            }
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
        if p.problem.retryable == Some(true) || p.is_any(&[ProblemCode::SerializationFailure]) {
            eprintln!(
                "  retryable: the transaction was aborted by a conflict; retry the transaction \
                 (run it again from `begin`)"
            );
        } else if p.is_any(ENDED) {
            eprintln!("  the transaction is gone; `begin` a new one");
        }
    }
}

/// `KEY = VALUE (version N)`; a value the transaction wrote itself has no version yet.
fn row_text(row: &Row) -> String {
    let version = match row.version {
        Some(v) => format!("version {v}"),
        None => "written by this transaction".to_string(),
    };
    format!("{} = {} ({version})", quote(&row.key), row.value.get())
}

/// A key as the shell reads it back: quoted when it holds whitespace, a quote or is empty.
fn quote(key: &str) -> String {
    if !key.is_empty() && !key.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') {
        return key.to_string();
    }
    format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_may_be_quoted() {
        fn w(t: &str) -> Option<(String, String)> {
            word(t).map(|(a, b)| (a, b.to_string())).ok()
        }
        assert_eq!(w("a b c"), Some(("a".into(), "b c".into())));
        assert_eq!(w(r#""a b" 1"#), Some(("a b".into(), "1".into())));
        assert_eq!(
            w(r#""say \"hi\" \\" {}"#),
            Some((r#"say "hi" \"#.into(), "{}".into()))
        );
        assert_eq!(w(r#""""#), Some((String::new(), String::new())));
        assert_eq!(w(r#""open"#), None);
        assert_eq!(w(r#""a"b"#), None);
        for key in ["plain", "a b", r#"q"u\o"#, ""] {
            assert_eq!(
                w(&format!("{} rest", quote(key))),
                Some((key.into(), "rest".into()))
            );
        }
    }
}
