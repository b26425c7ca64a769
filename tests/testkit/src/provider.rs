//! A scripted model provider on a loopback port: a raw HTTP/1.1 server whose every answer the
//! test chooses — an OpenAI-style completion, an error status with `Retry-After`, malformed
//! JSON, a slow answer, a dropped connection, an SSE stream complete or cut mid-way — and which
//! records every request body it received, so tests assert on the exact bytes a provider saw.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the stub answers one call.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// 200 with a chat completion: this text, reporting these completion tokens.
    Answer {
        text: String,
        completion_tokens: u32,
    },
    /// This status (with `Retry-After` seconds, if given) and a small JSON error.
    Status(u16, Option<u64>),
    /// 200 with a body that is not JSON.
    Malformed,
    /// Waits this long, then behaves as the inner behavior.
    Slow(Duration, Box<Behavior>),
    /// Closes the connection without answering.
    Drop,
    /// 200 `text/event-stream` with these content pieces; with `finish` the stream ends
    /// properly (`finish_reason` and `[DONE]`), without it the connection just closes.
    Stream { pieces: Vec<String>, finish: bool },
}

impl Behavior {
    pub fn answer(text: &str) -> Behavior {
        Behavior::Answer {
            text: text.into(),
            completion_tokens: 5,
        }
    }
}

/// One received call.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub body: serde_json::Value,
}

#[derive(Default)]
struct Script {
    queue: VecDeque<Behavior>,
    default: Option<Behavior>,
    calls: Vec<Received>,
}

/// The stub; clones share the script.
#[derive(Clone)]
pub struct StubProvider {
    url: String,
    script: Arc<Mutex<Script>>,
}

impl StubProvider {
    /// Starts a stub answering `default` unless a queued behavior comes first.
    pub async fn start(default: Behavior) -> StubProvider {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let addr = listener.local_addr().expect("stub addr");
        let script = Arc::new(Mutex::new(Script {
            default: Some(default),
            ..Default::default()
        }));
        let shared = script.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let script = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(socket, script).await;
                });
            }
        });
        StubProvider {
            url: format!("http://{addr}/v1"),
            script,
        }
    }

    /// The base URL to configure (`…/v1`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers the next call this way (then the queue, then the default).
    pub fn then(&self, behavior: Behavior) -> &Self {
        self.script
            .lock()
            .expect("script")
            .queue
            .push_back(behavior);
        self
    }

    pub fn set_default(&self, behavior: Behavior) {
        self.script.lock().expect("script").default = Some(behavior);
    }

    pub fn calls(&self) -> Vec<Received> {
        self.script.lock().expect("script").calls.clone()
    }

    pub fn call_count(&self) -> usize {
        self.script.lock().expect("script").calls.len()
    }
}

async fn serve(mut socket: TcpStream, script: Arc<Mutex<Script>>) -> std::io::Result<()> {
    // Read the head, then Content-Length bytes of body.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body: serde_json::Value =
        serde_json::from_slice(&buf[head_end..]).unwrap_or(serde_json::Value::Null);
    let streamed = body["stream"] == true;
    let behavior = {
        let mut s = script.lock().expect("script");
        s.calls.push(Received {
            at: Instant::now(),
            body,
        });
        match s.queue.pop_front() {
            Some(b) => b,
            None => s.default.clone().unwrap_or(Behavior::Drop),
        }
    };
    // Asked for a stream, an answer comes as a complete stream, as real providers do.
    let behavior = match behavior {
        Behavior::Answer { text, .. } if streamed => Behavior::Stream {
            pieces: text.split_inclusive(' ').map(str::to_string).collect(),
            finish: true,
        },
        other => other,
    };
    respond(&mut socket, behavior).await
}

fn completion(text: &str, completion_tokens: u32) -> String {
    serde_json::json!({
        "id": "cmpl-stub", "object": "chat.completion", "model": "stub-1",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": completion_tokens}
    })
    .to_string()
}

async fn write_json(
    socket: &mut TcpStream,
    status: &str,
    extra: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

async fn respond(socket: &mut TcpStream, behavior: Behavior) -> std::io::Result<()> {
    let mut behavior = behavior;
    while let Behavior::Slow(wait, inner) = behavior {
        tokio::time::sleep(wait).await;
        behavior = *inner;
    }
    match behavior {
        Behavior::Answer {
            text,
            completion_tokens,
        } => write_json(socket, "200 OK", "", &completion(&text, completion_tokens)).await,
        Behavior::Status(code, retry_after) => {
            let extra = retry_after
                .map(|s| format!("retry-after: {s}\r\n"))
                .unwrap_or_default();
            let body = serde_json::json!({"error": {"message": format!("stub status {code}")}})
                .to_string();
            write_json(socket, &format!("{code} Stub"), &extra, &body).await
        }
        Behavior::Malformed => write_json(socket, "200 OK", "", "this is not json").await,
        Behavior::Drop => socket.shutdown().await,
        Behavior::Stream { pieces, finish } => {
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
                .await?;
            for piece in pieces {
                let chunk = serde_json::json!({"model": "stub-1", "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
                socket
                    .write_all(format!("data: {chunk}\n\n").as_bytes())
                    .await?;
                socket.flush().await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if finish {
                let last = serde_json::json!({"model": "stub-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                                              "usage": {"prompt_tokens": 12, "completion_tokens": 5}});
                socket
                    .write_all(format!("data: {last}\n\ndata: [DONE]\n\n").as_bytes())
                    .await?;
            }
            socket.shutdown().await
        }
        Behavior::Slow(..) => Ok(()),
    }
}
