//! The Kubernetes streaming protocols' pure parts: which subprotocol a
//! client gets, the Status sent on the error channel, resize messages and
//! the WebSocket channel framing. Names and wire formats follow
//! k8s.io/apimachinery (remotecommand, httpstream, wsstream) and kubelet's
//! streaming server, which kubectl and crictl talk to.

use base64::Engine;
use serde::Deserialize;

/// SPDY remotecommand subprotocols, newest first.
pub const SPDY_REMOTECOMMAND: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// SPDY port forwarding.
pub const SPDY_PORTFORWARD: [&str; 1] = ["portforward.k8s.io"];
/// WebSocket remotecommand subprotocols.
pub const WS_REMOTECOMMAND: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// client-go's newer port forwarding: SPDY frames carried in WebSocket
/// binary messages (tools/portforward/tunneling_connection.go).
pub const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// WebSocket port forwarding: the SPDY tunnel, or kubelet's channel
/// protocol (one data and one error channel per port).
pub const WS_PORTFORWARD: [&str; 5] = [
    SPDY_TUNNEL,
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "portforward.k8s.io",
    "channel.k8s.io",
];

/// The version of the remotecommand protocol a session speaks; it decides
/// what the error channel carries and whether resize exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V1,
    V2,
    V3,
    V4,
    V5,
}

impl Version {
    pub fn of(protocol: &str) -> Version {
        match protocol {
            "v5.channel.k8s.io" => Version::V5,
            "v4.channel.k8s.io" | "v4.base64.channel.k8s.io" => Version::V4,
            "v3.channel.k8s.io" => Version::V3,
            "v2.channel.k8s.io" => Version::V2,
            _ => Version::V1,
        }
    }

    /// SPDY clients below v3 open no resize stream.
    pub fn spdy_resize(self) -> bool {
        self >= Version::V3
    }

    /// From v4 on the error channel carries a JSON Status with the exit
    /// code; before, a plain message and nothing on success.
    pub fn json_status(self) -> bool {
        self >= Version::V4
    }
}

/// Picks the first protocol the client offers that we support, as
/// httpstream.Handshake and wsstream do. `Ok(None)`: the client offered
/// none, and gets the oldest protocol.
pub fn negotiate<'a>(offered: &[String], supported: &[&'a str]) -> Result<Option<&'a str>, String> {
    let offered: Vec<&str> = offered
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(None);
    }
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| *s == o).copied())
        .map(Some)
        .ok_or_else(|| {
            format!(
                "unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"
            )
        })
}

/// How a remotecommand session ended, as the error channel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    ExitCode(i32),
    Error(String),
}

/// The bytes for the error channel, or nothing (v1-v3 say nothing on
/// success).
pub fn status_message(outcome: &Outcome, version: Version) -> Option<Vec<u8>> {
    if !version.json_status() {
        return match outcome {
            Outcome::Success => None,
            Outcome::ExitCode(code) => {
                Some(format!("command terminated with non-zero exit code: {code}").into_bytes())
            }
            Outcome::Error(msg) => Some(msg.clone().into_bytes()),
        };
    }
    let status = match outcome {
        Outcome::Success => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::ExitCode(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Error(msg) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {msg}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": msg}]},
            "code": 500,
        }),
    };
    Some(status.to_string().into_bytes())
}

/// A terminal size, as remotecommand.TerminalSize marshals it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Longest resize message kept while waiting for its end; anything longer
/// is not a terminal size.
pub const MAX_RESIZE_MESSAGE: usize = 1024;

/// Splits a byte stream of concatenated JSON objects (client-go writes
/// them back to back, no separator) into terminal sizes. Holds at most
/// [`MAX_RESIZE_MESSAGE`] bytes, so a flood cannot grow memory.
#[derive(Default)]
pub struct ResizeDecoder {
    pending: Vec<u8>,
}

impl ResizeDecoder {
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<TerminalSize>, String> {
        self.pending.extend_from_slice(data);
        let mut sizes = Vec::new();
        let consumed = {
            let mut stream =
                serde_json::Deserializer::from_slice(&self.pending).into_iter::<TerminalSize>();
            loop {
                match stream.next() {
                    Some(Ok(size)) => sizes.push(size),
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => return Err(format!("bad resize message: {e}")),
                    None => break,
                }
            }
            stream.byte_offset()
        };
        self.pending.drain(..consumed);
        if self.pending.len() > MAX_RESIZE_MESSAGE {
            return Err("resize message too long".into());
        }
        Ok(sizes)
    }

    /// The newest size in `data`, if it completes any: only the latest
    /// one matters to a terminal.
    pub fn latest(&mut self, data: &[u8]) -> Result<Option<TerminalSize>, String> {
        Ok(self.feed(data)?.last().copied())
    }
}

/// remotecommand's WebSocket channels.
pub const CHANNEL_STDIN: u8 = 0;
pub const CHANNEL_STDOUT: u8 = 1;
pub const CHANNEL_STDERR: u8 = 2;
pub const CHANNEL_ERROR: u8 = 3;
pub const CHANNEL_RESIZE: u8 = 4;
/// v5: `[255, channel]` closes that channel's client-to-server side.
pub const CHANNEL_CLOSE: u8 = 255;

/// A WebSocket message's payload: the channel byte then data, either raw
/// (binary protocols) or base64 text with the channel as an ASCII digit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Binary,
    Base64,
}

impl Framing {
    pub fn of(protocol: Option<&str>) -> Framing {
        match protocol {
            Some(p) if p.contains("base64.") => Framing::Base64,
            _ => Framing::Binary,
        }
    }
}

/// A message for the client: returns (is_text, payload).
pub fn encode_ws(framing: Framing, channel: u8, data: &[u8]) -> (bool, Vec<u8>) {
    match framing {
        Framing::Binary => {
            let mut out = Vec::with_capacity(data.len() + 1);
            out.push(channel);
            out.extend_from_slice(data);
            (false, out)
        }
        Framing::Base64 => {
            let mut out = vec![b'0' + channel];
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(data)
                    .as_bytes(),
            );
            (true, out)
        }
    }
}

/// A message from the client: its channel and data.
pub fn decode_ws(framing: Framing, text: bool, payload: &[u8]) -> Result<(u8, Vec<u8>), String> {
    let (&first, rest) = payload.split_first().ok_or("empty message")?;
    match (framing, text) {
        (Framing::Binary, _) => Ok((first, rest.to_vec())),
        (Framing::Base64, _) => {
            if !first.is_ascii_digit() {
                return Err(format!("bad base64 channel {first}"));
            }
            let data = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|e| format!("bad base64 data: {e}"))?;
            Ok((first - b'0', data))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn negotiation_prefers_the_clients_order() {
        let got = negotiate(
            &strings(&["v4.channel.k8s.io", "v3.channel.k8s.io"]),
            &SPDY_REMOTECOMMAND,
        );
        assert_eq!(got, Ok(Some("v4.channel.k8s.io")));
        let got = negotiate(
            &strings(&["v9.x", "v2.channel.k8s.io"]),
            &SPDY_REMOTECOMMAND,
        );
        assert_eq!(got, Ok(Some("v2.channel.k8s.io")));
        // WebSocket clients send one comma-separated header.
        let got = negotiate(
            &strings(&["v5.channel.k8s.io, v4.channel.k8s.io"]),
            &WS_REMOTECOMMAND,
        );
        assert_eq!(got, Ok(Some("v5.channel.k8s.io")));
        assert_eq!(negotiate(&[], &SPDY_REMOTECOMMAND), Ok(None));
        let err = negotiate(&strings(&["v9.x"]), &SPDY_REMOTECOMMAND).unwrap_err();
        assert!(
            err.contains("v9.x") && err.contains("v4.channel.k8s.io"),
            "{err}"
        );
    }

    #[test]
    fn versions_decide_resize_and_status() {
        assert_eq!(Version::of("v4.base64.channel.k8s.io"), Version::V4);
        assert_eq!(Version::of("channel.k8s.io"), Version::V1);
        assert!(!Version::V2.spdy_resize() && Version::V3.spdy_resize());
        assert!(!Version::V3.json_status() && Version::V5.json_status());
    }

    #[test]
    fn v4_status_carries_the_exit_code_as_client_go_reads_it() {
        let bytes = status_message(&Outcome::ExitCode(3), Version::V4).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let ok = status_message(&Outcome::Success, Version::V5).unwrap();
        assert_eq!(ok, br#"{"metadata":{},"status":"Success"}"#);
        let err = status_message(&Outcome::Error("boom".into()), Version::V4).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&err).unwrap();
        assert_eq!(v["reason"], "InternalError");
        assert_eq!(v["code"], 500);
    }

    #[test]
    fn old_versions_send_text_and_nothing_on_success() {
        assert_eq!(status_message(&Outcome::Success, Version::V3), None);
        assert_eq!(
            status_message(&Outcome::ExitCode(2), Version::V1).unwrap(),
            b"command terminated with non-zero exit code: 2"
        );
    }

    #[test]
    fn resize_messages_split_across_reads() {
        let mut d = ResizeDecoder::default();
        assert_eq!(d.feed(br#"{"Width":80,"#).unwrap(), vec![]);
        let sizes = d.feed(br#""Height":24}{"Width":100,"Height":30}"#).unwrap();
        assert_eq!(
            sizes,
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 30
                }
            ]
        );
        assert!(d.feed(b"not json").is_err());
    }

    #[test]
    fn a_resize_flood_without_an_end_is_refused() {
        let mut d = ResizeDecoder::default();
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = d.feed(br#"{"Width":80, "Height":24, "x":"aaaaaaaaaaaaaaaaaaaaaaaa"#) {
                err = Some(e);
                break;
            }
        }
        assert!(err.is_some());
        assert!(d.pending.len() < 4 * MAX_RESIZE_MESSAGE);
    }

    #[test]
    fn websocket_framing_round_trips() {
        let (text, bin) = encode_ws(Framing::Binary, CHANNEL_STDOUT, b"hi");
        assert!(!text);
        assert_eq!(bin, b"\x01hi");
        assert_eq!(
            decode_ws(Framing::Binary, false, &bin).unwrap(),
            (1, b"hi".to_vec())
        );
        let (text, b64) = encode_ws(Framing::Base64, CHANNEL_STDERR, b"hi");
        assert!(text);
        assert_eq!(b64, b"2aGk=");
        assert_eq!(
            decode_ws(Framing::Base64, true, b"0aGk=").unwrap(),
            (0, b"hi".to_vec())
        );
        assert!(decode_ws(Framing::Binary, false, b"").is_err());
        assert!(decode_ws(Framing::Base64, true, b"x").is_err());
        assert_eq!(Framing::of(Some("base64.channel.k8s.io")), Framing::Base64);
        assert_eq!(Framing::of(Some("v5.channel.k8s.io")), Framing::Binary);
    }
}
