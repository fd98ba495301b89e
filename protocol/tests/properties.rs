//! Property tests: round trips for every type, flag set, id and payload up to
//! 64 KiB; arbitrary bytes never panic a decoder; the stream codec yields the
//! same frames however its input is split.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::{Bytes, BytesMut};
use mxp_protocol::payload::*;
use mxp_protocol::*;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn any_type() -> impl Strategy<Value = MessageType> {
    proptest::sample::select(MessageType::ALL.to_vec())
}

fn any_flags() -> impl Strategy<Value = Flags> {
    (0u8..16).prop_map(|b| Flags::from_bits(b).unwrap())
}

fn any_header() -> impl Strategy<Value = FrameHeader> {
    (any_type(), any_flags(), any::<u64>(), any::<u64>()).prop_map(|(t, f, m, tr)| {
        FrameHeader::new(t)
            .with_flags(f)
            .with_message_id(m)
            .with_trace_id(tr)
    })
}

fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..=256),
        1 => proptest::collection::vec(any::<u8>(), 0..=max),
    ]
}

/// Frames (as outcomes) the codec yields for `input` fed in the given chunk sizes.
fn run_codec(input: &[u8], chunks: &[usize], max_payload: u64) -> Vec<Result<Frame, String>> {
    let mut codec = MxpCodec::with_max_payload(max_payload);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut sizes = chunks.iter().copied().cycle();
    let mut stopped = false;
    while !rest.is_empty() && !stopped {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        buf.extend_from_slice(chunk);
        // The codec never holds more than one frame plus the chunk just fed.
        assert!(buf.len() <= max_payload as usize + FRAME_OVERHEAD + n);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    if !codec.can_continue() {
                        stopped = true;
                        break;
                    }
                }
            }
        }
    }
    if !stopped {
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    if !codec.can_continue() {
                        break;
                    }
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn frame_round_trip(header in any_header(), payload in payload(64 * 1024)) {
        let frame = header.encode(&payload).unwrap();
        prop_assert_eq!(frame.wire_len(), payload.len() + FRAME_OVERHEAD);
        let back = Frame::parse(frame.as_bytes().clone()).unwrap();
        prop_assert_eq!(back.header(), header);
        prop_assert_eq!(back.payload_slice(), payload.as_slice());
        // encode_into writes the same bytes.
        let mut buf = BytesMut::new();
        header.encode_into(&payload, &mut buf).unwrap();
        prop_assert_eq!(&buf[..], frame.as_bytes().as_ref());
    }

    #[test]
    fn any_single_bit_flip_is_rejected(header in any_header(), payload in payload(512), bit in any::<prop::sample::Index>()) {
        let mut bytes = header.encode(&payload).unwrap().into_bytes().to_vec();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(Frame::parse(Bytes::from(bytes)).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let b = Bytes::from(bytes);
        if let Err(e) = Frame::parse(b.clone()) {
            prop_assert!(!e.class().is_empty());
        }
        let _ = AgentRegister::decode(&b);
        let _ = DiscoverRequest::decode(&b);
        let _ = Heartbeat::decode(&b);
        if let Ok(c) = Call::decode(&b) { let _ = c.parse_body(); }
        let _ = Call::peek_target(&b);
        if let Ok(r) = Response::decode(&b) { let _ = r.parse_body(); }
        if let Ok(e) = ErrorPayload::decode(&b) { let _ = e.parse_body(); }
        let _ = Ack::decode(&b);
        let _ = EventBody::decode(&b);
        let _ = StreamOpen::decode(&b);
        let _ = StreamChunk::decode(&b);
        if let Ok(c) = StreamClose::decode(&b) { let _ = c.parse_body(); }
        let _ = run_codec(&b, &[7], 1024);
    }

    /// Bytes that start like a frame (valid magic) reach the deeper checks.
    #[test]
    fn near_valid_headers_never_panic(ty in any::<u8>(), flags in any::<u8>(), reserved in any::<u16>(),
                                      len in prop_oneof![0u64..100, any::<u64>()], tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut v = Vec::new();
        v.extend_from_slice(&MAGIC.to_le_bytes());
        v.push(ty);
        v.push(flags);
        v.extend_from_slice(&reserved.to_le_bytes());
        v.extend_from_slice(&[0; 16]);
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&tail);
        let _ = Frame::parse(Bytes::from(v.clone()));
        let _ = run_codec(&v, &[3, 50], 64);
    }

    #[test]
    fn codec_output_does_not_depend_on_chunking(
        frames in proptest::collection::vec((any_header(), payload(2048)), 1..8),
        corrupt in proptest::option::of(any::<prop::sample::Index>()),
        chunks in proptest::collection::vec(1usize..300, 1..10),
    ) {
        let mut stream = Vec::new();
        for (h, p) in &frames {
            stream.extend_from_slice(h.encode(p).unwrap().as_bytes());
        }
        if let Some(i) = corrupt {
            let i = i.index(stream.len());
            stream[i] ^= 0x5a;
        }
        let whole = run_codec(&stream, &[stream.len()], 4096);
        let split = run_codec(&stream, &chunks, 4096);
        prop_assert_eq!(&whole, &split);
        if corrupt.is_none() {
            let got: Vec<_> = whole.into_iter().map(|r| r.unwrap()).collect();
            prop_assert_eq!(got.len(), frames.len());
            for (f, (h, p)) in got.iter().zip(&frames) {
                prop_assert_eq!(f.header(), *h);
                prop_assert_eq!(f.payload_slice(), p.as_slice());
            }
        }
    }

    #[test]
    fn agent_register_round_trip(id in any::<[u8; 16]>(), name in "[a-z0-9 ._-]{1,64}",
                                 caps in proptest::collection::vec("[a-z.]{1,40}", 0..10),
                                 ip in any::<[u8; 4]>(), port in any::<u16>()) {
        let reg = AgentRegister { agent_id: AgentId::from_bytes(id), name, capabilities: caps,
                                  endpoint: std::net::SocketAddrV4::new(ip.into(), port) };
        let bytes = reg.encode().unwrap();
        prop_assert_eq!(bytes.len(), reg.encoded_len());
        prop_assert_eq!(AgentRegister::decode_slice(&bytes).unwrap(), reg.clone());
        let frame = reg.to_frame(1, 2, Flags::EMPTY).unwrap();
        prop_assert_eq!(AgentRegister::from_frame(&frame).unwrap(), reg);
    }

    #[test]
    fn binary_prefix_payloads_round_trip(a in any::<[u8; 16]>(), b in any::<[u8; 16]>(), n in any::<u64>(),
                                         t in any::<u32>(), code in any::<u16>(), body in payload(4096), bidi in any::<bool>()) {
        let body = Bytes::from(body);
        let call = Call { target: AgentId::from_bytes(a), timeout_secs: t, body: body.clone() };
        prop_assert_eq!(Call::from_frame(&call.to_frame(n, n, Flags::EMPTY).unwrap()).unwrap(), call);
        let resp = Response { in_reply_to: n, body: body.clone() };
        prop_assert_eq!(Response::from_frame(&resp.to_frame(1, n, Flags::FINAL).unwrap()).unwrap(), resp);
        let err = ErrorPayload { in_reply_to: n, code: ErrorCode(code), body: body.clone() };
        prop_assert_eq!(ErrorPayload::from_frame(&err.to_frame(1, n, Flags::EMPTY).unwrap()).unwrap(), err);
        let ack = Ack { acked: n };
        prop_assert_eq!(Ack::from_frame(&ack.to_frame(1, n, Flags::EMPTY).unwrap()).unwrap(), ack);
        let stream_type = if bidi { StreamType::Bidirectional } else { StreamType::Unidirectional };
        let open = StreamOpen { stream_id: StreamId::from_bytes(a), target: AgentId::from_bytes(b), stream_type };
        prop_assert_eq!(StreamOpen::from_frame(&open.to_frame(1, n, Flags::EMPTY).unwrap()).unwrap(), open);
        let chunk = StreamChunk { stream_id: StreamId::from_bytes(b), seq: n, data: body.clone() };
        prop_assert_eq!(StreamChunk::from_frame(&chunk.to_frame(1, n, Flags::EMPTY).unwrap()).unwrap(), chunk);
        let close = StreamClose { stream_id: StreamId::from_bytes(b), body };
        prop_assert_eq!(StreamClose::from_frame(&close.to_frame(1, n, Flags::FINAL).unwrap()).unwrap(), close);
    }

    #[test]
    fn json_payloads_round_trip(method in "[a-z.]{1,32}", topic in "[a-z.]{1,32}", x in any::<i64>(), s in ".{0,64}") {
        let params = serde_json::json!({"x": x, "s": s});
        let call = Call::json(AgentId::from_bytes([1; 16]), 3, &CallBody::new(method.clone(), params.clone())).unwrap();
        let back = Call::from_frame(&call.to_frame(1, 1, Flags::EMPTY).unwrap()).unwrap();
        prop_assert_eq!(back.parse_body().unwrap(), CallBody::new(method, params.clone()));
        let ev = EventBody { topic, target: None, data: params };
        prop_assert_eq!(EventBody::from_frame(&ev.to_frame(1, 1, Flags::EMPTY).unwrap()).unwrap(), ev);
    }
}
