//! A small chat client for the gateway's WebSocket protocol (docs/chat-protocol.md):
//! type a line to send it, `/end` to end the session and get the ticket reference.
//!
//! ```text
//! cargo run -p e2e --bin chat -- --visitor me --phone 13800138000
//! cargo run -p e2e --bin chat -- --resume <token>
//! ```

use anyhow::{Result, bail};
use clap::Parser;
use e2e::ChatClient;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Parser)]
struct Args {
    /// The chat endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/chat/ws")]
    url: String,
    /// Visitor id to open a session with.
    #[arg(long, default_value = "tour-visitor")]
    visitor: String,
    /// A phone number for replies.
    #[arg(long)]
    phone: Option<String>,
    /// Resume the session of this token instead of opening one.
    #[arg(long)]
    resume: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut chat = ChatClient::connect(&args.url).await?;
    let session = match &args.resume {
        Some(token) => {
            chat.send_json(json!({"type": "resume", "token": token}))
                .await?;
            chat.recv_json().await?
        }
        None => chat.open(&args.visitor, args.phone.as_deref()).await?,
    };
    if session["type"] != "session" {
        bail!("the gateway refused the session: {session}");
    }
    eprintln!(
        "ticket {} (resume token {})",
        session["ticket_ref"], session["resume_token"]
    );
    eprintln!("type a message and Enter; /end ends the session");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut n = session["last_seq"].as_u64().unwrap_or(0);
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/end" {
            let (ended, closed) = chat.end().await?;
            println!("{ended}");
            eprintln!("closed: {} {}", closed.code, closed.reason);
            return Ok(());
        }
        n += 1;
        println!("{}", chat.say(&format!("c{n}"), line).await?);
    }
    Ok(())
}
