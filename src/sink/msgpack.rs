//! The little MessagePack the forward protocol needs: writing JSON events
//! as MessagePack (in the order written, numbers kept exactly as serde_json
//! reads them), EventTime, and reading the small maps a server answers.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Appends the MessagePack of one JSON text. Objects keep their key order;
/// integers from -2^63 to 2^64-1 stay integers, other numbers are float 64
/// (serde_json's reading of them).
pub fn json_to_msgpack(json: &[u8], out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    Transcode(out).deserialize(&mut de)?;
    de.end()
}

struct Transcode<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Transcode<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Transcode<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push(0xc0);
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(if v { 0xc3 } else { 0xc2 });
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        write_int(self.0, v);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        write_uint(self.0, v);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(0xcb);
        self.0.extend_from_slice(&v.to_be_bytes());
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        write_str(self.0, v);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut items = Vec::new();
        let mut n = 0usize;
        while seq.next_element_seed(Transcode(&mut items))?.is_some() {
            n += 1;
        }
        write_len(self.0, n, 0x90, 0xdc);
        self.0.extend_from_slice(&items);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut items = Vec::new();
        let mut n = 0usize;
        while map.next_key_seed(Transcode(&mut items))?.is_some() {
            map.next_value_seed(Transcode(&mut items))?;
            n += 1;
        }
        write_len(self.0, n, 0x80, 0xde);
        self.0.extend_from_slice(&items);
        Ok(())
    }
}

/// An unsigned integer in its shortest form.
pub fn write_uint(out: &mut Vec<u8>, v: u64) {
    if v < 128 {
        out.push(v as u8);
    } else if v <= u64::from(u8::MAX) {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= u64::from(u16::MAX) {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= u64::from(u32::MAX) {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// A signed integer in its shortest form.
pub fn write_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        write_uint(out, v as u64);
    } else if v >= -32 {
        out.push(v as i8 as u8);
    } else if v >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xd0, v as i8 as u8]);
    } else if v >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// A UTF-8 string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= usize::from(u8::MAX) {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= usize::from(u16::MAX) {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

/// Binary data.
pub fn write_bin(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n <= usize::from(u8::MAX) {
        out.extend_from_slice(&[0xc4, n as u8]);
    } else if n <= usize::from(u16::MAX) {
        out.push(0xc5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

/// An array header (`fix` 0x90, 32-bit 0xdc) or map header (0x80, 0xde).
pub fn write_len(out: &mut Vec<u8>, n: usize, fix: u8, long: u8) {
    if n < 16 {
        out.push(fix | n as u8);
    } else if n <= usize::from(u16::MAX) {
        out.push(long);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(long + 1);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Fluentd's EventTime: ext type 0, big-endian u32 seconds and nanoseconds.
pub fn write_event_time(out: &mut Vec<u8>, secs: u32, nanos: u32) {
    out.extend_from_slice(&[0xd7, 0x00]);
    out.extend_from_slice(&secs.to_be_bytes());
    out.extend_from_slice(&nanos.to_be_bytes());
}

/// What the client reads back: enough of MessagePack to find `ack` in a map
/// (and the strings and byte strings of a handshake).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(Vec<u8>),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Ext(i8, Vec<u8>),
}

impl Value {
    /// The value of `key` in a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(kv) => kv
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key.as_bytes()))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Why a value could not be read.
#[derive(Debug, PartialEq)]
pub enum ReadError {
    /// More bytes are needed.
    Incomplete,
    /// Not MessagePack (or nested deeper than anything a server sends).
    Invalid(String),
}

/// Reads one value from the start of `b`: the value and the bytes it took.
pub fn read(b: &[u8]) -> Result<(Value, usize), ReadError> {
    let mut pos = 0;
    let v = read_at(b, &mut pos, 0)?;
    Ok((v, pos))
}

fn take<'a>(b: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], ReadError> {
    let end = pos.checked_add(n).ok_or(ReadError::Incomplete)?;
    let s = b.get(*pos..end).ok_or(ReadError::Incomplete)?;
    *pos = end;
    Ok(s)
}

fn be(b: &[u8], pos: &mut usize, n: usize) -> Result<u64, ReadError> {
    Ok(take(b, pos, n)?
        .iter()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

fn read_at(b: &[u8], pos: &mut usize, depth: usize) -> Result<Value, ReadError> {
    if depth > 32 {
        return Err(ReadError::Invalid("nested too deep".into()));
    }
    let t = take(b, pos, 1)?[0];
    let bytes = |pos: &mut usize, n: u64| take(b, pos, n as usize).map(<[u8]>::to_vec);
    let items = |pos: &mut usize, n: u64| -> Result<Vec<Value>, ReadError> {
        (0..n).map(|_| read_at(b, pos, depth + 1)).collect()
    };
    let pairs = |pos: &mut usize, n: u64| -> Result<Vec<(Value, Value)>, ReadError> {
        (0..n)
            .map(|_| Ok((read_at(b, pos, depth + 1)?, read_at(b, pos, depth + 1)?)))
            .collect()
    };
    Ok(match t {
        0x00..=0x7f => Value::Int(i128::from(t)),
        0x80..=0x8f => Value::Map(pairs(pos, u64::from(t & 0x0f))?),
        0x90..=0x9f => Value::Array(items(pos, u64::from(t & 0x0f))?),
        0xa0..=0xbf => Value::Str(bytes(pos, u64::from(t & 0x1f))?),
        0xc0 => Value::Nil,
        0xc2 => Value::Bool(false),
        0xc3 => Value::Bool(true),
        0xc4 => {
            let n = be(b, pos, 1)?;
            Value::Bin(bytes(pos, n)?)
        }
        0xc5 => {
            let n = be(b, pos, 2)?;
            Value::Bin(bytes(pos, n)?)
        }
        0xc6 => {
            let n = be(b, pos, 4)?;
            Value::Bin(bytes(pos, n)?)
        }
        0xc7..=0xc9 => {
            let n = be(b, pos, 1 << (t - 0xc7))?;
            let ty = take(b, pos, 1)?[0] as i8;
            Value::Ext(ty, bytes(pos, n)?)
        }
        0xca => Value::Float(f64::from(f32::from_bits(be(b, pos, 4)? as u32))),
        0xcb => Value::Float(f64::from_bits(be(b, pos, 8)?)),
        0xcc..=0xcf => Value::Int(i128::from(be(b, pos, 1 << (t - 0xcc))?)),
        0xd0 => Value::Int(i128::from(be(b, pos, 1)? as u8 as i8)),
        0xd1 => Value::Int(i128::from(be(b, pos, 2)? as u16 as i16)),
        0xd2 => Value::Int(i128::from(be(b, pos, 4)? as u32 as i32)),
        0xd3 => Value::Int(i128::from(be(b, pos, 8)? as i64)),
        0xd4..=0xd8 => {
            let ty = take(b, pos, 1)?[0] as i8;
            Value::Ext(ty, bytes(pos, 1 << (t - 0xd4))?)
        }
        0xd9..=0xdb => {
            let n = be(b, pos, 1 << (t - 0xd9))?;
            Value::Str(bytes(pos, n)?)
        }
        0xdc | 0xdd => {
            let n = be(b, pos, 2 << (t - 0xdc))?;
            Value::Array(items(pos, n)?)
        }
        0xde | 0xdf => {
            let n = be(b, pos, 2 << (t - 0xde))?;
            Value::Map(pairs(pos, n)?)
        }
        0xe0..=0xff => Value::Int(i128::from(t as i8)),
        0xc1 => return Err(ReadError::Invalid("byte 0xc1 is never used".into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(json: &str) -> Vec<u8> {
        let mut out = Vec::new();
        json_to_msgpack(json.as_bytes(), &mut out).unwrap();
        out
    }

    #[test]
    fn json_becomes_msgpack_in_order() {
        assert_eq!(enc("null"), [0xc0]);
        assert_eq!(enc("[true,false]"), [0x92, 0xc3, 0xc2]);
        assert_eq!(enc("-1"), [0xff]);
        assert_eq!(enc("-33"), [0xd0, 0xdf]);
        assert_eq!(enc("200"), [0xcc, 200]);
        assert_eq!(
            enc("18446744073709551615"),
            [0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            enc("-9223372036854775808"),
            [0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(enc("1.5"), [0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            enc(r#"{"b":1,"a":"é"}"#),
            [0x82, 0xa1, b'b', 1, 0xa1, b'a', 0xa2, 0xc3, 0xa9]
        );
        assert!(json_to_msgpack(b"{} x", &mut Vec::new()).is_err());
    }

    #[test]
    fn what_is_written_reads_back() {
        let mut out = Vec::new();
        let long = "x".repeat(70_000);
        write_len(&mut out, 3, 0x90, 0xdc);
        write_str(&mut out, &long);
        write_int(&mut out, -40_000);
        write_event_time(&mut out, 7, 9);
        let (v, used) = read(&out).unwrap();
        assert_eq!(used, out.len());
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Str(long.into_bytes()),
                Value::Int(-40_000),
                Value::Ext(0, vec![0, 0, 0, 7, 0, 0, 0, 9]),
            ])
        );
        assert_eq!(read(&out[..out.len() - 1]), Err(ReadError::Incomplete));
        let ack = [0x81, 0xa3, b'a', b'c', b'k', 0xa2, b'i', b'd'];
        let (v, _) = read(&ack).unwrap();
        assert_eq!(v.get("ack"), Some(&Value::Str(b"id".to_vec())));
    }
}
