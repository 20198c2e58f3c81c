//! `logbook token ...`: tokens of a running server (admin only): create (the secret is
//! printed once), list (no secrets), revoke.

use logbook_api::auth::{CreateToken, TokenCreated, TokenInfo, TokenList};
use logbook_api::paths;

use crate::client::{Client, ServerArgs, print_json};

/// Tokens on a running server.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token for a principal; its secret is printed once and stored nowhere.
    ///
    /// Example: `logbook token create ingest --scope streams:append:orders --scope
    /// streams:read:orders --expires-in-ms 86400000`
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// Who the token acts as: 1 to 128 characters of A-Z a-z 0-9 . _ @ -.
        principal: String,
        /// A scope (repeat for several): admin, metrics:read, audit:read, data_subjects:erase,
        /// data_subjects:export, streams:append|read|manage:PATTERN,
        /// views:read|manage:PATTERN, kv:read|write:PATTERN,
        /// groups:consume|read|manage:PATTERN, schemas:read|write:PATTERN,
        /// derived_streams:manage:PATTERN; a pattern is a name, a prefix ending in `*`, or `*`.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// The token stops working this many ms after creation (default: never).
        #[arg(long)]
        expires_in_ms: Option<u64>,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List tokens: id, principal, scopes, expiry, revocation (never secrets).
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id: it authenticates nothing from now on.
    Revoke {
        #[command(flatten)]
        server: ServerArgs,
        /// The token's id (`logbook token list`).
        id: String,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

impl TokenCommand {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            TokenCommand::Create { json, .. }
            | TokenCommand::List { json, .. }
            | TokenCommand::Revoke { json, .. } => *json,
        }
    }
}

/// Runs a token command.
pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            server,
            principal,
            scopes,
            expires_in_ms,
            json,
        } => {
            let client = Client::new(&server)?;
            let body = CreateToken {
                principal,
                scopes,
                expires_in_ms,
            };
            let answer: TokenCreated = client.post_as(paths::route::TOKENS, &body, &[], 0)?.body;
            if json {
                return print_json(&answer);
            }
            outln!("created token {}", describe(&answer.info));
            outln!(
                "secret (shown this once; send it as Authorization: Bearer …):\n{}",
                answer.token
            );
        }
        TokenCommand::List { server, json } => {
            let answer: TokenList = Client::new(&server)?.get_as(paths::route::TOKENS, &[])?;
            if json {
                return print_json(&answer);
            }
            for t in &answer.tokens {
                outln!("{}", describe(t));
            }
        }
        TokenCommand::Revoke { server, id, json } => {
            let answer: TokenInfo = Client::new(&server)?.delete_as(&paths::token(&id))?;
            if json {
                return print_json(&answer);
            }
            outln!("revoked {}", describe(&answer));
        }
    }
    Ok(())
}

/// One line: id, principal, scopes, expiry, revocation (times in ms since the epoch).
fn describe(t: &TokenInfo) -> String {
    let mut line = format!(
        "{} principal {} scopes {}",
        t.id,
        t.principal,
        t.scopes.join(",")
    );
    if let Some(e) = t.expires_at_ms {
        line.push_str(&format!(" expires_at_ms {e}"));
    }
    if let Some(r) = t.revoked_at_ms {
        line.push_str(&format!(" REVOKED at_ms {r}"));
    }
    line
}
