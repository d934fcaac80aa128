//! A byte stream carried in WebSocket binary messages, as client-go's
//! tunneling port-forward sends SPDY: each write is one message, reads
//! concatenate the messages' payloads.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::Message;

use crate::http::Upgraded;
use crate::ws::{self, normal_close};

const BUFFER: usize = 64 * 1024;
/// How long the client has to answer our close.
const CLOSE_ANSWER: std::time::Duration = std::time::Duration::from_secs(5);

/// The stream inside the WebSocket; the bridging tasks end when either
/// side closes.
pub async fn over_websocket(io: Upgraded) -> DuplexStream {
    let (mut sink, mut source) = ws::accept(io).await.split();
    let (ours, theirs) = tokio::io::duplex(BUFFER);
    let (mut read_half, mut write_half) = tokio::io::split(ours);
    let inbound = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            match message {
                Message::Binary(data) if write_half.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = write_half.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match read_half.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
        // The client should answer the close; one that does not must not
        // keep the connection for ever.
        let mut inbound = inbound;
        if tokio::time::timeout(CLOSE_ANSWER, &mut inbound)
            .await
            .is_err()
        {
            inbound.abort();
        }
    });
    theirs
}
