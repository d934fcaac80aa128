use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::time::timeout;

use super::*;

const T: Duration = Duration::from_secs(10);

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn pair(server_limits: Limits) -> (Session, Session, mpsc::Receiver<Stream>) {
    let (a, b) = duplex(64 * 1024);
    let (client, _client_accept) = Session::new(a, Role::Client, Limits::default());
    let (server, accept) = Session::new(b, Role::Server, server_limits);
    (client, server, accept)
}

/// The other end of a session, driven frame by frame.
struct RawPeer {
    io: DuplexStream,
    enc: Encoder,
    dec: Decoder,
    buf: BytesMut,
}

impl RawPeer {
    fn new(io: DuplexStream) -> Self {
        Self {
            io,
            enc: Encoder::new(),
            dec: Decoder::default(),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        self.enc.encode(&frame, &mut out).unwrap();
        self.io.write_all(&out).await.unwrap();
    }

    /// The next frame, or `None` once the session closed the connection.
    async fn recv(&mut self) -> Option<Frame> {
        timeout(T, async {
            loop {
                if let Some(f) = self.dec.decode(&mut self.buf).unwrap() {
                    return Some(f);
                }
                match self.io.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("frame within the timeout")
    }

    /// The next frame that is not a WINDOW_UPDATE.
    async fn recv_skip_windows(&mut self) -> Option<Frame> {
        loop {
            match self.recv().await {
                Some(Frame::WindowUpdate { .. }) => continue,
                other => return other,
            }
        }
    }
}

fn server_with_raw_client(limits: Limits) -> (Session, mpsc::Receiver<Stream>, RawPeer) {
    let (a, b) = duplex(256 * 1024);
    let (server, accept) = Session::new(b, Role::Server, limits);
    (server, accept, RawPeer::new(a))
}

fn syn(id: u32, headers: Headers) -> Frame {
    Frame::SynStream {
        stream_id: id,
        associated_to: 0,
        priority: 0,
        fin: false,
        unidirectional: false,
        headers,
    }
}

#[tokio::test]
async fn open_reply_and_data_both_ways() {
    let (client, _server, mut accept) = pair(Limits::default());
    let server_task = tokio::spawn(async move {
        let stream = accept.recv().await.unwrap();
        assert_eq!(stream.id(), 1);
        assert_eq!(stream.header("StreamType"), Some("stdout"));
        assert_eq!(stream.header("missing"), None);
        stream.reply(h(&[("x-ok", "1")])).await.unwrap();
        stream.reply(vec![]).await.unwrap(); // idempotent
        let (mut r, mut w) = stream.split();
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        w.write_all(b"world").await.unwrap();
        w.shutdown().await.unwrap();
        w.shutdown().await.unwrap(); // idempotent
    });
    let stream = timeout(T, client.open_stream(h(&[("streamtype", "stdout")])))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stream.id(), 1);
    assert_eq!(stream.headers(), &h(&[("streamtype", "stdout")]));
    assert!(matches!(
        stream.reply(vec![]).await,
        Err(Error::NotPeerStream(1))
    ));
    let (mut r, mut w) = stream.split();
    w.write_all(b"hello").await.unwrap();
    w.shutdown().await.unwrap();
    let mut got = Vec::new();
    timeout(T, r.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, b"world");
    timeout(T, server_task).await.unwrap().unwrap();
    // Writing after FIN fails.
    assert!(w.write_all(b"late").await.is_err());
    // The next stream gets the next odd id.
    let _ = client;
}

#[tokio::test]
async fn large_transfers_on_concurrent_streams() {
    let (client, _server, mut accept) = pair(Limits::default());
    // Echo server: every stream's data comes back.
    tokio::spawn(async move {
        while let Some(stream) = accept.recv().await {
            tokio::spawn(async move {
                stream.reply(vec![]).await.unwrap();
                let (mut r, mut w) = stream.split();
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
    });
    let mut tasks = Vec::new();
    for i in 0..5u8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let stream = client
                .open_stream(h(&[("streamtype", "data")]))
                .await
                .unwrap();
            let (mut r, mut w) = stream.split();
            let payload: Vec<u8> = (0..(300_000 + usize::from(i) * 77_777))
                .map(|n| (n % 251) as u8 ^ i)
                .collect();
            let p = payload.clone();
            let writer = tokio::spawn(async move {
                w.write_all(&p).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            assert_eq!(got.len(), payload.len());
            assert!(got == payload, "stream {i} data differs");
        }));
    }
    for t in tasks {
        timeout(T, t).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn reset_ends_the_stream_for_both_sides() {
    let (client, _server, mut accept) = pair(Limits::default());
    let stream = {
        let open = client.open_stream(h(&[("streamtype", "stdin")]));
        let (stream, peer) = tokio::join!(open, async {
            let s = accept.recv().await.unwrap();
            s.reply(vec![]).await.unwrap();
            s
        });
        // The server resets its side.
        peer.reset(rst_status::CANCEL);
        stream.unwrap()
    };
    let (mut r, mut w) = stream.split();
    let mut got = Vec::new();
    timeout(T, r.read_to_end(&mut got)).await.unwrap().unwrap();
    assert!(got.is_empty());
    assert!(w.write_all(b"x").await.is_err());
    // The session is still fine.
    let (s2, p2) = tokio::join!(client.open_stream(vec![]), async {
        let s = accept.recv().await.unwrap();
        s.reply(vec![]).await.unwrap();
        s
    });
    assert_eq!(s2.unwrap().id(), 3);
    assert_eq!(p2.id(), 3);
}

#[tokio::test]
async fn refused_open_gives_reset_error() {
    let (client, _server, _accept) = pair(Limits {
        max_streams: 0,
        ..Limits::default()
    });
    let err = timeout(T, client.open_stream(vec![]))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, Error::Reset(rst_status::REFUSED_STREAM)),
        "{err}"
    );
}

#[tokio::test]
async fn max_streams_is_enforced() {
    let (client, _server, mut accept) = pair(Limits {
        max_streams: 2,
        ..Limits::default()
    });
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..2 {
            let s = accept.recv().await.unwrap();
            s.reply(vec![]).await.unwrap();
            held.push(s);
        }
        (held, accept)
    });
    let a = client.open_stream(vec![]).await.unwrap();
    let _b = client.open_stream(vec![]).await.unwrap();
    let (held, mut accept) = timeout(T, held).await.unwrap().unwrap();
    let err = timeout(T, client.open_stream(vec![]))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::Reset(rst_status::REFUSED_STREAM)));

    // Finishing one stream in both directions frees a slot.
    let (mut ar, aw) = a.split();
    aw.finish().unwrap();
    let mut held = held.into_iter();
    let first = held.next().unwrap();
    let (mut fr, fw) = first.split();
    let mut sink = Vec::new();
    timeout(T, fr.read_to_end(&mut sink))
        .await
        .unwrap()
        .unwrap();
    fw.finish().unwrap();
    timeout(T, ar.read_to_end(&mut sink))
        .await
        .unwrap()
        .unwrap();
    // The server saw the client's FIN and sent its own: the slot is free.
    let (c, s) = tokio::join!(client.open_stream(vec![]), async {
        let s = accept.recv().await.unwrap();
        s.reply(vec![]).await.unwrap();
        s
    });
    assert_eq!(c.unwrap().id(), 7);
    assert_eq!(s.id(), 7);
}

#[tokio::test]
async fn pings_are_answered() {
    let (client, server, _accept) = pair(Limits::default());
    timeout(T, client.ping()).await.unwrap().unwrap();
    timeout(T, server.ping()).await.unwrap().unwrap();
    timeout(T, client.ping()).await.unwrap().unwrap();

    // A raw client's PING comes back with the same id.
    let (_server, _accept, mut peer) = server_with_raw_client(Limits::default());
    peer.send(Frame::Ping { id: 7 }).await;
    assert_eq!(peer.recv().await, Some(Frame::Ping { id: 7 }));
    // SETTINGS and WINDOW_UPDATE are accepted and ignored.
    peer.send(Frame::Settings {
        entries: vec![crate::frame::Setting {
            flags: 0,
            id: 7,
            value: 1,
        }],
    })
    .await;
    peer.send(Frame::WindowUpdate {
        stream_id: 0,
        delta: 5,
    })
    .await;
    peer.send(Frame::Ping { id: 9 }).await;
    assert_eq!(peer.recv().await, Some(Frame::Ping { id: 9 }));
}

#[tokio::test]
async fn a_peer_that_pings_but_never_reads_is_cut_off() {
    let (server, _accept, mut peer) = server_with_raw_client(Limits::default());
    // Far more answers than the socket buffer and the control queue hold.
    let flood = tokio::spawn(async move {
        let mut frames = BytesMut::new();
        for id in 0..100_000u32 {
            peer.enc
                .encode(&Frame::Ping { id: id * 2 + 1 }, &mut frames)
                .unwrap();
        }
        let _ = peer.io.write_all(&frames).await;
        peer
    });
    timeout(Duration::from_secs(20), server.closed())
        .await
        .expect("the session ends instead of queueing answers for ever");
    flood.abort();
}

#[tokio::test]
async fn closed_resolves_when_the_peer_drops() {
    let (server, mut accept, mut peer) = server_with_raw_client(Limits::default());
    peer.send(syn(1, h(&[("streamtype", "stdin")]))).await;
    peer.send(Frame::Data {
        stream_id: 1,
        fin: false,
        data: Bytes::from_static(b"queued"),
    })
    .await;
    let stream = timeout(T, accept.recv()).await.unwrap().unwrap();
    stream.reply(vec![]).await.unwrap();
    assert_eq!(
        peer.recv().await,
        Some(Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: vec![]
        })
    );
    drop(peer);
    timeout(T, server.closed()).await.unwrap();
    assert!(server.is_ended());
    // Data that arrived before the end is still delivered, then EOF.
    let (mut r, mut w) = stream.split();
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"queued");
    assert!(w.write_all(b"x").await.is_err());
    assert!(timeout(T, accept.recv()).await.unwrap().is_none());
    assert!(matches!(
        server.open_stream(vec![]).await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn close_sends_goaway_and_ends_both_sides() {
    let (client, server, mut accept) = pair(Limits::default());
    let (c, s) = tokio::join!(client.open_stream(vec![]), async {
        let s = accept.recv().await.unwrap();
        s.reply(vec![]).await.unwrap();
        s
    });
    let (mut cr, _cw) = c.unwrap().split();
    let (_sr, mut sw) = s.split();
    sw.write_all(b"last words").await.unwrap();
    timeout(T, server.close()).await.unwrap();
    timeout(T, client.closed()).await.unwrap();
    let mut got = Vec::new();
    cr.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last words");
    assert!(timeout(T, accept.recv()).await.unwrap().is_none());
}

#[tokio::test]
async fn goaway_from_raw_peer_after_all_data() {
    let (server, mut accept, mut peer) = server_with_raw_client(Limits::default());
    peer.send(syn(1, vec![])).await;
    let stream = timeout(T, accept.recv()).await.unwrap().unwrap();
    let (mut r, mut w) = stream.split();
    // The first write replies by itself.
    w.write_all(b"out").await.unwrap();
    assert!(matches!(
        peer.recv().await,
        Some(Frame::SynReply { stream_id: 1, .. })
    ));
    assert_eq!(
        peer.recv().await,
        Some(Frame::Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from_static(b"out")
        })
    );
    peer.send(Frame::Data {
        stream_id: 1,
        fin: false,
        data: Bytes::from_static(b"in"),
    })
    .await;
    peer.send(Frame::GoAway {
        last_good_stream_id: 0,
        status: goaway_status::OK,
    })
    .await;
    timeout(T, server.closed()).await.unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"in");
    // The server shut its side down.
    assert_eq!(peer.recv().await, None);
}

#[tokio::test]
async fn invalid_stream_ids_are_protocol_errors() {
    for bad in [2u32, 1] {
        let (server, mut accept, mut peer) = server_with_raw_client(Limits::default());
        let mut _held = None;
        if bad == 1 {
            // Reusing id 1.
            peer.send(syn(1, vec![])).await;
            _held = accept.recv().await;
        }
        peer.send(syn(bad, vec![])).await;
        assert_eq!(
            peer.recv_skip_windows().await,
            Some(Frame::GoAway {
                last_good_stream_id: if bad == 1 { 1 } else { 0 },
                status: goaway_status::PROTOCOL_ERROR
            })
        );
        assert_eq!(peer.recv().await, None);
        timeout(T, server.closed()).await.unwrap();
    }
}

#[tokio::test]
async fn garbage_input_ends_the_session_with_goaway() {
    let (server, _accept, mut peer) = server_with_raw_client(Limits::default());
    // A control frame of version 2.
    peer.io
        .write_all(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1])
        .await
        .unwrap();
    assert!(matches!(
        peer.recv().await,
        Some(Frame::GoAway {
            status: goaway_status::PROTOCOL_ERROR,
            ..
        })
    ));
    timeout(T, server.closed()).await.unwrap();

    // A DATA frame over the limit.
    let (server, _accept, mut peer) = server_with_raw_client(Limits {
        max_data_frame: 1000,
        ..Limits::default()
    });
    peer.send(syn(1, vec![])).await;
    peer.send(Frame::Data {
        stream_id: 1,
        fin: false,
        data: Bytes::from(vec![0u8; 1001]),
    })
    .await;
    assert!(matches!(
        peer.recv().await,
        Some(Frame::GoAway {
            status: goaway_status::PROTOCOL_ERROR,
            ..
        })
    ));
    timeout(T, server.closed()).await.unwrap();
}

#[tokio::test]
async fn window_updates_follow_consumption() {
    let (_server, mut accept, mut peer) = server_with_raw_client(Limits::default());
    peer.send(syn(1, vec![])).await;
    let stream = timeout(T, accept.recv()).await.unwrap().unwrap();
    stream.reply(vec![]).await.unwrap();
    assert!(matches!(peer.recv().await, Some(Frame::SynReply { .. })));
    // 100 KiB in 10 KiB frames.
    let (mut r, _w) = stream.split();
    let reader = tokio::spawn(async move {
        let mut got = vec![0u8; 100 * 1024];
        r.read_exact(&mut got).await.unwrap();
        r
    });
    for _ in 0..10 {
        peer.send(Frame::Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from(vec![b'x'; 10 * 1024]),
        })
        .await;
    }
    let _r = timeout(T, reader).await.unwrap().unwrap();
    let (mut session_delta, mut stream_delta) = (0, 0);
    // Updates go out each time 32 KiB more has been consumed: 40 + 40.
    while session_delta < 80 * 1024 || stream_delta < 80 * 1024 {
        match peer.recv().await {
            Some(Frame::WindowUpdate {
                stream_id: 0,
                delta,
            }) => session_delta += delta,
            Some(Frame::WindowUpdate {
                stream_id: 1,
                delta,
            }) => stream_delta += delta,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn slow_reader_back_pressures_without_losing_data() {
    let (client, _server, mut accept) = pair(Limits::default());
    let (c, s) = tokio::join!(client.open_stream(vec![]), async {
        let s = accept.recv().await.unwrap();
        s.reply(vec![]).await.unwrap();
        s
    });
    let (_cr, mut cw) = c.unwrap().split();
    // Far more than the stream queue plus the socket buffer holds.
    let total = 4 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            cw.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        cw.shutdown().await.unwrap();
    });
    // The writer cannot finish while nobody reads.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writer.is_finished());
    let (mut sr, _sw) = s.split();
    let mut n = 0;
    while let Some(chunk) = timeout(T, sr.recv()).await.unwrap() {
        assert!(chunk.iter().all(|b| *b == 7));
        n += chunk.len();
    }
    assert_eq!(n, total);
    timeout(T, writer).await.unwrap().unwrap();
}

#[tokio::test]
async fn dropped_reader_discards_and_dropped_writer_finishes() {
    let (client, _server, mut accept) = pair(Limits::default());
    let (c, s) = tokio::join!(client.open_stream(vec![]), async {
        let s = accept.recv().await.unwrap();
        s.reply(vec![]).await.unwrap();
        s
    });
    let (sr, sw) = s.split();
    drop(sr);
    let (mut cr, mut cw) = c.unwrap().split();
    // Data to a dropped reader is discarded without blocking the session.
    for _ in 0..64 {
        cw.write_all(&[1u8; 32 * 1024]).await.unwrap();
    }
    // Dropping the server's writer (all clones) sends FIN.
    let sw2 = sw.clone();
    drop(sw);
    drop(sw2);
    let mut got = Vec::new();
    timeout(T, cr.read_to_end(&mut got)).await.unwrap().unwrap();
    assert!(got.is_empty());
    timeout(T, client.ping()).await.unwrap().unwrap();
}

#[tokio::test]
async fn unreplied_peer_stream_dropped_gets_reply_with_fin() {
    let (_server, mut accept, mut peer) = server_with_raw_client(Limits::default());
    peer.send(syn(1, vec![])).await;
    let stream = timeout(T, accept.recv()).await.unwrap().unwrap();
    drop(stream);
    assert_eq!(
        peer.recv().await,
        Some(Frame::SynReply {
            stream_id: 1,
            fin: true,
            headers: vec![]
        })
    );
}

#[tokio::test]
async fn tcp_loopback() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let (session, mut accept) = Session::new(sock, Role::Server, Limits::default());
        let mut s = accept.recv().await.unwrap();
        s.reply(vec![]).await.unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).await.unwrap();
        s.write_all(got.to_uppercase().as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        session.closed().await;
    });
    let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, _accept) = Session::new(sock, Role::Client, Limits::default());
    let mut s = client
        .open_stream(h(&[("streamtype", "stdout")]))
        .await
        .unwrap();
    s.write_all(b"shout").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = String::new();
    timeout(T, s.read_to_string(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, "SHOUT");
    timeout(T, client.close()).await.unwrap();
    timeout(T, server).await.unwrap().unwrap();
}
