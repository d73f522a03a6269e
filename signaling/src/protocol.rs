//! Signaling protocol v1 wire types (see `docs/protocol.md`). Parsing is pure and total: every
//! input maps to a message or to an error code, never to a panic.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// The version this module speaks, and its WebSocket subprotocol.
pub const VERSION: u32 = 1;
pub const SUBPROTOCOL: &str = "otter.v1";

pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_ROOM_CHARS: usize = 64;
pub const MAX_REF_CHARS: usize = 64;

/// Error codes of protocol v1. Their strings are part of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    BadJson,
    BadMessage,
    UnknownType,
    BadRoomId,
    RoomFull,
    AuthRequired,
    AuthInvalid,
    AuthExpired,
    AuthWrongRoom,
    NotJoined,
    AlreadyJoined,
    UnknownPeer,
    RateLimited,
    TooLarge,
    IdleTimeout,
    JoinTimeout,
    ServerBusy,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::BadJson,
        ErrorCode::BadMessage,
        ErrorCode::UnknownType,
        ErrorCode::BadRoomId,
        ErrorCode::RoomFull,
        ErrorCode::AuthRequired,
        ErrorCode::AuthInvalid,
        ErrorCode::AuthExpired,
        ErrorCode::AuthWrongRoom,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::UnknownPeer,
        ErrorCode::RateLimited,
        ErrorCode::TooLarge,
        ErrorCode::IdleTimeout,
        ErrorCode::JoinTimeout,
        ErrorCode::ServerBusy,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad-json",
            ErrorCode::BadMessage => "bad-message",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::BadRoomId => "bad-room-id",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::AuthRequired => "auth-required",
            ErrorCode::AuthInvalid => "auth-invalid",
            ErrorCode::AuthExpired => "auth-expired",
            ErrorCode::AuthWrongRoom => "auth-wrong-room",
            ErrorCode::NotJoined => "not-joined",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::IdleTimeout => "idle-timeout",
            ErrorCode::JoinTimeout => "join-timeout",
            ErrorCode::ServerBusy => "server-busy",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A protocol error addressed to the client that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtoError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtoError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Join {
    pub room: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub resume: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Sdp {
    pub to: String,
    pub sdp: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Candidate {
    pub to: String,
    /// An `RTCIceCandidateInit` object, or null for end of candidates.
    pub candidate: Value,
}

/// What a client may send.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    Join(Join),
    Offer(Sdp),
    Answer(Sdp),
    Candidate(Candidate),
    Leave,
    Ping,
}

/// The kinds of relayed message, used for metrics and routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayKind {
    Offer,
    Answer,
    Candidate,
}

impl RelayKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RelayKind::Offer => "offer",
            RelayKind::Answer => "answer",
            RelayKind::Candidate => "candidate",
        }
    }
}

/// A parsed client frame: the message, plus the client's `id` to echo in errors.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub msg: ClientMsg,
    pub reference: Option<Value>,
}

/// Parse one text frame. On error, also returns the `id` if one could be read.
pub fn parse_client(text: &str) -> Result<Parsed, (ProtoError, Option<Value>)> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (
            ProtoError::new(ErrorCode::BadJson, format!("frame is not valid JSON: {e}")),
            None,
        )
    })?;
    let Value::Object(mut obj) = value else {
        return Err((
            ProtoError::new(ErrorCode::BadJson, "frame must be a JSON object"),
            None,
        ));
    };
    let reference = take_reference(&mut obj).map_err(|e| (e, None))?;
    let fail = |e: ProtoError| (e, reference.clone());
    let kind = match obj.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(fail(ProtoError::new(
                ErrorCode::BadMessage,
                "`type` must be a string",
            )));
        }
        None => {
            return Err(fail(ProtoError::new(
                ErrorCode::BadMessage,
                "missing `type`",
            )));
        }
    };
    let body = Value::Object(obj);
    let field_error = |e: serde_json::Error| {
        fail(ProtoError::new(
            ErrorCode::BadMessage,
            format!("{kind}: {e}"),
        ))
    };
    let msg = match kind.as_str() {
        "join" => {
            let join: Join = serde_json::from_value(body).map_err(field_error)?;
            if let Some(name) = &join.name {
                check_name(name).map_err(fail)?;
            }
            ClientMsg::Join(join)
        }
        "offer" => ClientMsg::Offer(serde_json::from_value(body).map_err(field_error)?),
        "answer" => ClientMsg::Answer(serde_json::from_value(body).map_err(field_error)?),
        "candidate" => {
            let c: Candidate = serde_json::from_value(body).map_err(field_error)?;
            if !matches!(c.candidate, Value::Object(_) | Value::Null) {
                return Err(fail(ProtoError::new(
                    ErrorCode::BadMessage,
                    "candidate: `candidate` must be an RTCIceCandidateInit object or null",
                )));
            }
            ClientMsg::Candidate(c)
        }
        "leave" => ClientMsg::Leave,
        "ping" => ClientMsg::Ping,
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(fail(ProtoError::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown message type {shown:?}; v1 knows join, offer, answer, candidate, leave, ping"
                ),
            )));
        }
    };
    Ok(Parsed { msg, reference })
}

/// An offer, answer or candidate read without building a `serde_json::Value`: the payload
/// (the `sdp` string or the `candidate` object) stays the JSON text the client wrote, already
/// validated, and is relayed as it is, never unescaped and escaped again (the 2.5 KB SDP was
/// the bulk of a relay's parsing cost).
#[derive(Debug, Clone)]
pub struct RelayIn<'a> {
    pub kind: RelayKind,
    pub to: std::borrow::Cow<'a, str>,
    pub payload: &'a RawValue,
    /// The client's `id`, as written (a number, or a string of at most [`MAX_REF_CHARS`]).
    pub reference: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RelayWire<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    to: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    sdp: Option<&'a RawValue>,
    #[serde(default, borrow)]
    candidate: Option<&'a RawValue>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
}

/// The fast path for the frames that make up almost all traffic. `None` for anything else or
/// anything unusual (an escaped `type`, a duplicate key, a null candidate, a bad `id`): the
/// caller then uses [`parse_client`], which gives the precise answer or error. Whatever this
/// accepts, [`parse_client`] accepts as the same message.
pub fn parse_relay(text: &str) -> Option<RelayIn<'_>> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let wire: RelayWire<'_> = serde_json::from_str(text).ok()?;
    let (kind, payload) = match wire.kind {
        "offer" => (RelayKind::Offer, wire.sdp?),
        "answer" => (RelayKind::Answer, wire.sdp?),
        "candidate" => (RelayKind::Candidate, wire.candidate?),
        _ => return None,
    };
    let want = if kind == RelayKind::Candidate {
        '{'
    } else {
        '"'
    };
    if !payload.get().starts_with(want) {
        return None;
    }
    let reference = match wire.id {
        None => None,
        Some(id) if id.get() == "null" => None,
        Some(id)
            if id
                .get()
                .starts_with(|c: char| c == '-' || c.is_ascii_digit()) =>
        {
            Some(id)
        }
        Some(id) => {
            let s: String = serde_json::from_str(id.get()).ok()?;
            (s.chars().count() <= MAX_REF_CHARS).then_some(id)?;
            Some(id)
        }
    };
    Some(RelayIn {
        kind,
        to: wire.to,
        payload,
        reference,
    })
}

/// The frame that relays `payload` (raw JSON, as [`parse_relay`] read it) from `from`: the
/// same object `ServerMsg::{Offer, Answer, Candidate}` serializes to, in one allocation.
pub fn relay_frame(kind: RelayKind, from: &str, payload: &RawValue) -> String {
    let field = match kind {
        RelayKind::Offer | RelayKind::Answer => "sdp",
        RelayKind::Candidate => "candidate",
    };
    let mut out = String::with_capacity(payload.get().len() + from.len() + 48);
    out.push_str(r#"{"type":""#);
    out.push_str(kind.as_str());
    out.push_str(r#"","from":"#);
    // Peer ids are generated (`p-` and hex) and need no escaping; anything else is escaped.
    if from
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        out.push('"');
        out.push_str(from);
        out.push('"');
    } else {
        out.push_str(&Value::String(from.to_owned()).to_string());
    }
    out.push_str(",\"");
    out.push_str(field);
    out.push_str("\":");
    out.push_str(payload.get());
    out.push('}');
    out
}

/// The client's `id`, to echo as `ref` in errors.
fn take_reference(obj: &mut serde_json::Map<String, Value>) -> Result<Option<Value>, ProtoError> {
    match obj.remove("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= MAX_REF_CHARS => Ok(Some(Value::String(s))),
        Some(n @ Value::Number(_)) => Ok(Some(n)),
        Some(_) => Err(ProtoError::new(
            ErrorCode::BadMessage,
            format!("`id` must be a number or a string of at most {MAX_REF_CHARS} characters"),
        )),
    }
}

/// A `join`'s display name: not too long, nothing invisible or reordering.
fn check_name(name: &str) -> Result<(), ProtoError> {
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ProtoError::new(
            ErrorCode::BadMessage,
            format!("join: `name` is longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    if !valid_display_name(name) {
        return Err(ProtoError::new(
            ErrorCode::BadMessage,
            "join: `name` may not contain control or format characters (bidi overrides, zero-width)",
        ));
    }
    Ok(())
}

/// Display names are shown to the other peers: no control characters and no Unicode format
/// characters (category Cf: bidi overrides, zero-width joiners and spaces, soft hyphen), which
/// would let one participant impersonate another in a list.
pub fn valid_display_name(name: &str) -> bool {
    !name.chars().any(|c| c.is_control() || is_format_char(c))
}

/// Unicode general category Cf (Unicode 15).
fn is_format_char(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Room ids: 1–64 of `A-Za-z0-9_-`, so they are safe in URLs, logs and Redis keys.
pub fn valid_room_id(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= MAX_ROOM_CHARS
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub credential: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_peers: u32,
    pub max_message_bytes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaveReason {
    Left,
    Timeout,
    Kicked,
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg<'a> {
    #[serde(rename_all = "camelCase")]
    Joined {
        v: u32,
        room: &'a str,
        peer_id: &'a str,
        resume_token: &'a str,
        resumed: bool,
        peers: &'a [PeerInfo],
        ice_servers: &'a [IceServer],
        limits: Limits,
    },
    PeerJoined {
        peer: &'a PeerInfo,
    },
    #[serde(rename_all = "camelCase")]
    PeerLeft {
        peer_id: &'a str,
        reason: LeaveReason,
    },
    Offer {
        from: &'a str,
        sdp: &'a str,
    },
    Answer {
        from: &'a str,
        sdp: &'a str,
    },
    Candidate {
        from: &'a str,
        candidate: &'a Value,
    },
    Left,
    Pong,
    #[serde(rename_all = "camelCase")]
    Reconnect {
        reason: &'a str,
        retry_after_ms: u64,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
    },
}

impl ServerMsg<'_> {
    /// Serialize to a frame. Serializing these types cannot fail (no maps with non-string
    /// keys, no custom serializers), so a failure is a bug worth a loud, non-crashing note.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            tracing::error!(error = %e, "serializing a server message failed");
            r#"{"type":"error","code":"internal","message":"serialization failed"}"#.to_owned()
        })
    }
}

pub fn error_text(err: &ProtoError, reference: Option<&Value>) -> String {
    ServerMsg::Error {
        code: err.code,
        message: &err.message,
        reference,
    }
    .to_text()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code_of(text: &str) -> ErrorCode {
        parse_client(text).expect_err("should fail").0.code
    }

    #[test]
    fn parses_every_client_message() {
        let p = parse_client(r#"{"type":"join","room":"r1","name":"A","id":7}"#).expect("join");
        assert_eq!(p.reference, Some(json!(7)));
        assert!(matches!(p.msg, ClientMsg::Join(Join { ref room, .. }) if room == "r1"));
        assert!(matches!(
            parse_client(r#"{"type":"offer","to":"p","sdp":"v=0"}"#)
                .expect("offer")
                .msg,
            ClientMsg::Offer(_)
        ));
        assert!(matches!(
            parse_client(r#"{"type":"answer","to":"p","sdp":"v=0"}"#)
                .expect("answer")
                .msg,
            ClientMsg::Answer(_)
        ));
        assert!(matches!(
            parse_client(r#"{"type":"candidate","to":"p","candidate":null}"#)
                .expect("cand")
                .msg,
            ClientMsg::Candidate(_)
        ));
        assert_eq!(
            parse_client(r#"{"type":"leave"}"#).expect("leave").msg,
            ClientMsg::Leave
        );
        assert_eq!(
            parse_client(r#"{"type":"ping","extra":1}"#)
                .expect("ping")
                .msg,
            ClientMsg::Ping
        );
    }

    #[test]
    fn the_relay_fast_path_takes_relays_and_leaves_the_rest() {
        let offer = r#"{"type":"offer","to":"p-1","sdp":"v=0\r\n","id":"a"}"#;
        let fast = parse_relay(offer).expect("an offer");
        assert_eq!((fast.kind, fast.to.as_ref()), (RelayKind::Offer, "p-1"));
        assert_eq!(fast.payload.get(), r#""v=0\r\n""#);
        let frame = relay_frame(fast.kind, "p-2", fast.payload);
        assert_eq!(frame, r#"{"type":"offer","from":"p-2","sdp":"v=0\r\n"}"#);
        let cand = r#"{"type":"candidate","to":"p-1","candidate":{"candidate":"c","sdpMid":"0"}}"#;
        assert_eq!(
            parse_relay(cand).expect("candidate").kind,
            RelayKind::Candidate
        );
        // Left to the full parse: other types, null candidates, wrong payload types, duplicate
        // keys, long ids, arrays.
        for text in [
            r#"{"type":"join","room":"r"}"#,
            r#"{"type":"candidate","to":"p-1","candidate":null}"#,
            r#"{"type":"offer","to":"p-1","sdp":5}"#,
            r#"{"type":"candidate","to":"p-1","candidate":"x"}"#,
            r#"{"type":"offer","to":"p-1","sdp":"a","sdp":"b"}"#,
            r#"{"type":"offer","to":"p-1","sdp":"a","id":{"x":1}}"#,
            r#"["offer"]"#,
        ] {
            assert!(parse_relay(text).is_none(), "{text}");
        }
        let long_id = format!(
            r#"{{"type":"offer","to":"p","sdp":"a","id":"{}"}}"#,
            "x".repeat(65)
        );
        assert!(parse_relay(&long_id).is_none());
    }

    #[test]
    fn bad_input_maps_to_codes() {
        assert_eq!(code_of("not json"), ErrorCode::BadJson);
        assert_eq!(code_of("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code_of(r#"{"room":"x"}"#), ErrorCode::BadMessage);
        assert_eq!(code_of(r#"{"type":5}"#), ErrorCode::BadMessage);
        assert_eq!(code_of(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code_of(r#"{"type":"offer","to":"p"}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code_of(r#"{"type":"candidate","to":"p","candidate":"x"}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code_of(r#"{"type":"join","room":"r","name":5}"#),
            ErrorCode::BadMessage
        );
        let long = "n".repeat(65);
        assert_eq!(
            code_of(&format!(r#"{{"type":"join","room":"r","name":"{long}"}}"#)),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code_of(r#"{"type":"ping","id":{"a":1}}"#),
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn errors_echo_the_reference() {
        let (_, reference) = parse_client(r#"{"type":"nope","id":"abc"}"#).expect_err("fails");
        assert_eq!(reference, Some(json!("abc")));
        let text = error_text(
            &ProtoError::new(ErrorCode::RoomFull, "full"),
            reference.as_ref(),
        );
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            v,
            json!({"type":"error","code":"room-full","message":"full","ref":"abc"})
        );
    }

    #[test]
    fn room_ids() {
        assert!(valid_room_id("consult-42_A"));
        assert!(!valid_room_id(""));
        assert!(!valid_room_id("a b"));
        assert!(!valid_room_id("ä"));
        assert!(!valid_room_id(&"x".repeat(65)));
        assert!(valid_room_id(&"x".repeat(64)));
    }

    #[test]
    fn server_messages_match_the_document() {
        let peer = PeerInfo {
            id: "p-1".into(),
            name: None,
        };
        let v: Value =
            serde_json::from_str(&ServerMsg::PeerJoined { peer: &peer }.to_text()).expect("json");
        assert_eq!(v, json!({"type":"peer-joined","peer":{"id":"p-1"}}));
        let v: Value = serde_json::from_str(
            &ServerMsg::PeerLeft {
                peer_id: "p-1",
                reason: LeaveReason::Timeout,
            }
            .to_text(),
        )
        .expect("json");
        assert_eq!(
            v,
            json!({"type":"peer-left","peerId":"p-1","reason":"timeout"})
        );
        let v: Value = serde_json::from_str(
            &ServerMsg::Reconnect {
                reason: "shutdown",
                retry_after_ms: 500,
            }
            .to_text(),
        )
        .expect("json");
        assert_eq!(
            v,
            json!({"type":"reconnect","reason":"shutdown","retryAfterMs":500})
        );
        for code in ErrorCode::ALL {
            let s = serde_json::to_value(code).expect("code");
            assert_eq!(s, json!(code.as_str()));
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn field() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            ".{0,80}".prop_map(Value::from),
            "[a-z0-9_-]{0,70}".prop_map(Value::from),
            prop::collection::vec(".{0,8}", 0..3).prop_map(Value::from),
        ]
    }

    fn frame() -> impl Strategy<Value = String> {
        let known = prop::sample::select(vec![
            "join",
            "offer",
            "answer",
            "candidate",
            "leave",
            "ping",
        ])
        .prop_map(String::from);
        let kind = prop_oneof![3 => known, 1 => ".{0,12}"];
        let names = prop::sample::select(vec![
            "room",
            "to",
            "sdp",
            "candidate",
            "name",
            "token",
            "resume",
            "id",
        ]);
        (kind, prop::collection::vec((names, field()), 0..6)).prop_map(|(kind, fields)| {
            let mut obj = serde_json::Map::new();
            obj.insert("type".into(), Value::from(kind));
            for (k, v) in fields {
                obj.insert(k.into(), v);
            }
            Value::Object(obj).to_string()
        })
    }

    proptest! {
        /// Total: any text maps to a message or an error, never a panic.
        #[test]
        fn any_text_parses_or_errs(text in ".{0,300}") {
            let _ = parse_client(&text);
        }

        /// What parses keeps the documented rules; what fails has a code and echoes a valid id.
        #[test]
        fn parsed_messages_keep_the_rules(text in frame()) {
            match parse_client(&text) {
                Ok(Parsed { msg, reference }) => {
                    if let ClientMsg::Join(j) = &msg {
                        let name_ok = j.name.as_deref().is_none_or(|n| {
                            n.chars().count() <= MAX_NAME_CHARS && valid_display_name(n)
                        });
                        prop_assert!(name_ok, "{text}");
                    }
                    if let ClientMsg::Candidate(c) = &msg {
                        prop_assert!(matches!(c.candidate, Value::Object(_) | Value::Null));
                    }
                    prop_assert!(matches!(reference, None | Some(Value::Number(_)) | Some(Value::String(_))));
                }
                Err((err, reference)) => {
                    prop_assert!(ErrorCode::ALL.contains(&err.code));
                    if let Some(Value::String(s)) = &reference {
                        prop_assert!(s.chars().count() <= MAX_REF_CHARS);
                    }
                    let v: Value = serde_json::from_str(&error_text(&err, reference.as_ref()))
                        .expect("error frames are JSON");
                    prop_assert_eq!(&v["type"], "error");
                }
            }
        }

        /// The fast path agrees with `parse_client` on everything it accepts, and its frame is
        /// the one `ServerMsg` serializes (as JSON).
        #[test]
        fn the_relay_fast_path_matches_the_full_parse(text in frame()) {
            if let Some(fast) = parse_relay(&text) {
                let Ok(Parsed { msg, reference }) = parse_client(&text) else {
                    return Err(TestCaseError::fail(format!("fast path took a bad frame: {text}")));
                };
                let fast_ref = fast.reference.map(|r| serde_json::from_str::<Value>(r.get()).expect("id"));
                prop_assert_eq!(fast_ref, reference);
                let from = "p-0123abcd";
                let slow = match &msg {
                    ClientMsg::Offer(m) => ServerMsg::Offer { from, sdp: &m.sdp }.to_text(),
                    ClientMsg::Answer(m) => ServerMsg::Answer { from, sdp: &m.sdp }.to_text(),
                    ClientMsg::Candidate(m) => ServerMsg::Candidate { from, candidate: &m.candidate }.to_text(),
                    other => return Err(TestCaseError::fail(format!("fast path took {other:?}: {text}"))),
                };
                let to = match &msg {
                    ClientMsg::Offer(m) | ClientMsg::Answer(m) => &m.to,
                    ClientMsg::Candidate(m) => &m.to,
                    _ => unreachable!("matched above"),
                };
                prop_assert_eq!(&fast.to, to);
                let fast_frame: Value = serde_json::from_str(&relay_frame(fast.kind, from, fast.payload)).expect("json");
                let slow_frame: Value = serde_json::from_str(&slow).expect("json");
                prop_assert_eq!(fast_frame, slow_frame);
            }
        }
    }
}
