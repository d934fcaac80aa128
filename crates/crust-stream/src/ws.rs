//! WebSocket plumbing shared by the remotecommand and portforward
//! handlers: the server side of the handshake's aftermath, channel-framed
//! messages in and out, and a clean close.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use crate::http::Upgraded;
use crate::protocol::{self, Framing};

/// Largest WebSocket message accepted from a client.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Messages queued for the client before senders wait.
const OUTGOING: usize = 16;

pub type Ws = WebSocketStream<Upgraded>;
pub type Source = SplitStream<Ws>;

/// The WebSocket on a connection already upgraded by the HTTP side.
pub async fn accept(io: Upgraded) -> Ws {
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(MAX_MESSAGE);
    config.max_frame_size = Some(MAX_MESSAGE);
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
}

/// A close frame with status 1000: client-go takes only that as a clean
/// end of the session (no status reads as an error).
pub fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Sends `(channel, data)` pairs as channel-framed messages until every
/// sender is dropped, then closes the WebSocket cleanly.
pub fn channel_writer(
    mut sink: SplitSink<Ws, Message>,
    framing: Framing,
) -> (mpsc::Sender<(u8, Vec<u8>)>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<(u8, Vec<u8>)>(OUTGOING);
    let writer = tokio::spawn(async move {
        while let Some((channel, data)) = rx.recv().await {
            let (text, payload) = protocol::encode_ws(framing, channel, &data);
            let message = if text {
                Message::Text(String::from_utf8_lossy(&payload).into_owned().into())
            } else {
                Message::Binary(payload.into())
            };
            if sink.send(message).await.is_err() {
                return;
            }
        }
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    });
    (tx, writer)
}

/// The next channel message from the client, skipping what is not one;
/// `None` once the client closed or the connection failed.
pub async fn next_channel_message(source: &mut Source, framing: Framing) -> Option<(u8, Vec<u8>)> {
    while let Some(Ok(message)) = source.next().await {
        let (text, payload) = match message {
            Message::Binary(b) => (false, b.to_vec()),
            Message::Text(t) => (true, t.as_bytes().to_vec()),
            Message::Close(_) => return None,
            _ => continue,
        };
        if let Ok(decoded) = protocol::decode_ws(framing, text, &payload) {
            return Some(decoded);
        }
    }
    None
}
