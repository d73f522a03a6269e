//! What replicas send each other on their pub/sub channels: one or more records per message,
//! each a header line and the client frame as it is, byte for byte (never re-encoded):
//!
//! ```text
//! {kind} {room} {subject} {replica} {to} {length}\n{frame}
//! ```
//!
//! `kind` is `f` (a relayed frame), `F` (one the room hash routed after a view missed: never
//! forwarded again), `j` / `l` (presence: `subject` joined on `replica` / left), `m` (`subject`
//! resumed on `replica`; no frame, and `to` is the seat's new epoch). `to` is the
//! comma-separated recipients on the receiving replica, or `-`. Room ids, peer ids and replica ids never hold spaces, commas or newlines
//! (room ids are checked by the protocol; the others are generated), and the Lua scripts write
//! the same format.

use std::fmt::Write;

/// The kind of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Frame,
    Forwarded,
    Joined,
    Left,
    Moved,
}

impl Kind {
    /// The tag that starts a record (the broadcast script takes it as an argument).
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Frame => "f",
            Kind::Forwarded => "F",
            Kind::Joined => "j",
            Kind::Left => "l",
            Kind::Moved => "m",
        }
    }

    fn from_tag(tag: &str) -> Option<Kind> {
        Some(match tag {
            "f" => Kind::Frame,
            "F" => Kind::Forwarded,
            "j" => Kind::Joined,
            "l" => Kind::Left,
            "m" => Kind::Moved,
            _ => return None,
        })
    }
}

/// One record, borrowed from the message that carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: Kind,
    pub room: &'a str,
    pub subject: &'a str,
    pub replica: &'a str,
    to: &'a str,
    pub frame: &'a str,
}

impl<'a> Record<'a> {
    /// The recipients on this replica.
    pub fn to(&self) -> impl Iterator<Item = &'a str> {
        let to = if self.to == "-" { "" } else { self.to };
        to.split(',').filter(|s| !s.is_empty())
    }
}

impl Record<'_> {
    /// The seat's new epoch, of an `m` record.
    pub fn epoch(&self) -> Option<u64> {
        self.to.parse().ok()
    }
}

/// Append a relayed frame for `to` in `room` to a message being built.
pub fn push_frame(buf: &mut String, room: &str, to: &str, frame: &str) {
    let _ = writeln!(buf, "f {room} - - {to} {}", frame.len());
    buf.push_str(frame);
}

/// The bytes [`push_frame`] appends, exactly.
pub fn frame_record_len(room: &str, to: &str, frame: &str) -> usize {
    let digits = frame.len().checked_ilog10().map_or(1, |d| d as usize + 1);
    "f ".len() + room.len() + " - - ".len() + to.len() + 1 + digits + 1 + frame.len()
}

/// A message that could not be read (a bug or a foreign publisher on our channel).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pub/sub record: {0}")]
pub struct Malformed(&'static str);

/// The records of one message, in order; stops at the first malformed one.
pub fn records(mut msg: &str) -> impl Iterator<Item = Result<Record<'_>, Malformed>> {
    std::iter::from_fn(move || {
        if msg.is_empty() {
            return None;
        }
        match next(msg) {
            Ok((rec, rest)) => {
                msg = rest;
                Some(Ok(rec))
            }
            Err(e) => {
                msg = "";
                Some(Err(e))
            }
        }
    })
}

fn next(msg: &str) -> Result<(Record<'_>, &str), Malformed> {
    let (header, rest) = msg.split_once('\n').ok_or(Malformed("no header line"))?;
    let mut f = header.split(' ');
    let mut field = |what| f.next().filter(|s| !s.is_empty()).ok_or(Malformed(what));
    let kind = Kind::from_tag(field("kind")?).ok_or(Malformed("unknown kind"))?;
    let room = field("room")?;
    let subject = field("subject")?;
    let replica = field("replica")?;
    let to = field("recipients")?;
    let len: usize = field("length")?
        .parse()
        .map_err(|_| Malformed("length is not a number"))?;
    let frame = rest
        .get(..len)
        .ok_or(Malformed("frame shorter than its length"))?;
    let rec = Record {
        kind,
        room,
        subject,
        replica,
        to,
        frame,
    };
    Ok((rec, &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_byte_for_byte() {
        let mut buf = String::new();
        let sdp = "{\"type\":\"offer\",\"sdp\":\"v=0\\r\\n\\u00e9 é\n\"}";
        push_frame(&mut buf, "r1", "p-1", sdp);
        push_frame(&mut buf, "r2", "p-2", "");
        let recs: Vec<Record<'_>> = records(&buf).collect::<Result<_, _>>().expect("parses");
        assert_eq!(recs.len(), 2);
        assert_eq!(
            (recs[0].kind, recs[0].room, recs[0].frame),
            (Kind::Frame, "r1", sdp)
        );
        assert_eq!(recs[0].to().collect::<Vec<_>>(), ["p-1"]);
        assert_eq!((recs[1].room, recs[1].frame), ("r2", ""));
    }

    #[test]
    fn a_frame_records_length_is_what_push_frame_appends() {
        for frame in [
            "",
            "x",
            "123456789",
            "0123456789",
            &"s".repeat(2_500),
            &"b".repeat(65_536),
        ] {
            let mut buf = String::new();
            push_frame(&mut buf, "room-1", "p-22", frame);
            assert_eq!(
                frame_record_len("room-1", "p-22", frame),
                buf.len(),
                "{}",
                frame.len()
            );
        }
    }

    #[test]
    fn presence_and_moves_as_the_scripts_write_them() {
        let msg = "j room p-9 abc p-1,p-2 4\nabcdm room p-9 def 3 0\n";
        let recs: Vec<Record<'_>> = records(msg).collect::<Result<_, _>>().expect("parses");
        assert_eq!(
            (recs[0].kind, recs[0].subject, recs[0].replica),
            (Kind::Joined, "p-9", "abc")
        );
        assert_eq!(recs[0].to().collect::<Vec<_>>(), ["p-1", "p-2"]);
        assert_eq!(recs[0].frame, "abcd");
        assert_eq!((recs[1].kind, recs[1].replica), (Kind::Moved, "def"));
        assert_eq!(recs[1].epoch(), Some(3));
    }

    #[test]
    fn garbage_is_refused_not_misread() {
        for bad in [
            "x",
            "q r s t u 1\na",
            "f r s t u 9\nshort",
            "f r s t u nine\n",
            "f r  t u 1\na",
            // A length that cuts a character in two.
            "f r s t u 1\né",
        ] {
            let got: Vec<_> = records(bad).collect();
            assert!(matches!(got.last(), Some(Err(_))), "{bad:?}: {got:?}");
        }
    }
}
