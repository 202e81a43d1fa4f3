//! The protobuf wire format of SentencePiece's `ModelProto`, read and written by hand (no protoc, no C++).

/// A field's value as it appears on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Varint(u64),
    Fixed64(u64),
    Bytes(Vec<u8>),
    Fixed32(u32),
}

/// The fields of one message in wire order; repeated and unknown fields are kept so that writing round-trips.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(pub Vec<(u32, Value)>);

/// Reads a base-128 varint.
fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut result: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            return Err(format!("truncated varint at byte {}", *pos));
        };
        *pos += 1;
        result |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(result);
        }
    }
    Err(format!("varint longer than 10 bytes at byte {}", *pos))
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Fields {
    /// Parses one message's bytes.
    pub fn parse(buf: &[u8]) -> Result<Fields, String> {
        let mut pos = 0;
        let mut fields = Vec::new();
        while pos < buf.len() {
            let start = pos;
            let key = read_varint(buf, &mut pos)?;
            let num = (key >> 3) as u32;
            if num == 0 || key >> 3 > u64::from(u32::MAX >> 3) {
                return Err(format!("invalid field number at byte {start}"));
            }
            let value = match key & 7 {
                0 => Value::Varint(read_varint(buf, &mut pos)?),
                1 => {
                    let b = buf
                        .get(pos..pos + 8)
                        .ok_or_else(|| format!("truncated fixed64 field {num}"))?;
                    pos += 8;
                    Value::Fixed64(u64::from_le_bytes(b.try_into().expect("8 bytes")))
                }
                2 => {
                    let len = read_varint(buf, &mut pos)?;
                    let end = usize::try_from(len)
                        .ok()
                        .and_then(|l| pos.checked_add(l))
                        .filter(|&e| e <= buf.len())
                        .ok_or_else(|| {
                            format!("truncated field {num}: length {len} runs past the end")
                        })?;
                    let v = buf[pos..end].to_vec();
                    pos = end;
                    Value::Bytes(v)
                }
                5 => {
                    let b = buf
                        .get(pos..pos + 4)
                        .ok_or_else(|| format!("truncated fixed32 field {num}"))?;
                    pos += 4;
                    Value::Fixed32(u32::from_le_bytes(b.try_into().expect("4 bytes")))
                }
                w => {
                    return Err(format!(
                        "unsupported wire type {w} for field {num} at byte {start}"
                    ))
                }
            };
            fields.push((num, value));
        }
        Ok(Fields(fields))
    }

    /// Serializes the fields in their stored order.
    pub fn write(&self, out: &mut Vec<u8>) {
        for (num, value) in &self.0 {
            let wt = match value {
                Value::Varint(_) => 0,
                Value::Fixed64(_) => 1,
                Value::Bytes(_) => 2,
                Value::Fixed32(_) => 5,
            };
            write_varint(out, (u64::from(*num) << 3) | wt);
            match value {
                Value::Varint(v) => write_varint(out, *v),
                Value::Fixed64(v) => out.extend_from_slice(&v.to_le_bytes()),
                Value::Bytes(b) => {
                    write_varint(out, b.len() as u64);
                    out.extend_from_slice(b);
                }
                Value::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
            }
        }
    }

    /// Serialized bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn last(&self, num: u32) -> Option<&Value> {
        self.0.iter().rev().find(|(n, _)| *n == num).map(|(_, v)| v)
    }

    /// The last value of a varint field (proto2: the last occurrence wins).
    pub fn varint(&self, num: u32) -> Result<Option<u64>, String> {
        match self.last(num) {
            None => Ok(None),
            Some(Value::Varint(v)) => Ok(Some(*v)),
            Some(_) => Err(format!(
                "field {num} has the wrong wire type (expected varint)"
            )),
        }
    }

    /// A bool field.
    pub fn bool(&self, num: u32, default: bool) -> Result<bool, String> {
        Ok(self.varint(num)?.map_or(default, |v| v != 0))
    }

    /// An int32 field (negative values are sign-extended varints).
    pub fn int32(&self, num: u32, default: i32) -> Result<i32, String> {
        Ok(self.varint(num)?.map_or(default, |v| v as i64 as i32))
    }

    /// A float field.
    pub fn float(&self, num: u32, default: f32) -> Result<f32, String> {
        match self.last(num) {
            None => Ok(default),
            Some(Value::Fixed32(v)) => Ok(f32::from_bits(*v)),
            Some(_) => Err(format!(
                "field {num} has the wrong wire type (expected float)"
            )),
        }
    }

    /// A bytes field.
    pub fn bytes(&self, num: u32) -> Result<Option<&[u8]>, String> {
        match self.last(num) {
            None => Ok(None),
            Some(Value::Bytes(b)) => Ok(Some(b)),
            Some(_) => Err(format!(
                "field {num} has the wrong wire type (expected length-delimited)"
            )),
        }
    }

    /// A string field (must be UTF-8).
    pub fn string(&self, num: u32) -> Result<Option<String>, String> {
        match self.bytes(num)? {
            None => Ok(None),
            Some(b) => String::from_utf8(b.to_vec())
                .map(Some)
                .map_err(|_| format!("field {num} is not valid UTF-8")),
        }
    }

    /// All values of a repeated length-delimited field.
    pub fn repeated_bytes(&self, num: u32) -> Result<Vec<&[u8]>, String> {
        self.0
            .iter()
            .filter(|(n, _)| *n == num)
            .map(|(_, v)| match v {
                Value::Bytes(b) => Ok(b.as_slice()),
                _ => Err(format!(
                    "field {num} has the wrong wire type (expected length-delimited)"
                )),
            })
            .collect()
    }

    /// Replaces every occurrence of a field by one value (appended at the field-number position).
    pub fn set(&mut self, num: u32, value: Value) {
        self.0.retain(|(n, _)| *n != num);
        let at = self
            .0
            .iter()
            .position(|(n, _)| *n > num)
            .unwrap_or(self.0.len());
        self.0.insert(at, (num, value));
    }

    /// Removes a field.
    pub fn remove(&mut self, num: u32) {
        self.0.retain(|(n, _)| *n != num);
    }

    /// Appends one value of a repeated field after the existing ones of the same number.
    pub fn push(&mut self, num: u32, value: Value) {
        let at = self
            .0
            .iter()
            .position(|(n, _)| *n > num)
            .unwrap_or(self.0.len());
        self.0.insert(at, (num, value));
    }
}

/// Encodes an int32 as protobuf does (negative numbers as 10-byte varints).
pub fn int32_value(v: i32) -> Value {
    Value::Varint(i64::from(v) as u64)
}

/// Encodes a string/bytes value.
pub fn bytes_value(b: impl Into<Vec<u8>>) -> Value {
    Value::Bytes(b.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let mut f = Fields::default();
        f.set(4, int32_value(-1));
        f.set(1, bytes_value("abc"));
        f.set(2, Value::Fixed32(1.5f32.to_bits()));
        let bytes = f.to_bytes();
        let g = Fields::parse(&bytes).unwrap();
        assert_eq!(g.int32(4, 0).unwrap(), -1);
        assert_eq!(g.string(1).unwrap().as_deref(), Some("abc"));
        assert_eq!(g.float(2, 0.0).unwrap(), 1.5);
        assert!(g.float(1, 0.0).is_err());
        assert!(Fields::parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(Fields::parse(&[0x0a, 0x05, b'a']).is_err());
        assert!(Fields::parse(&[0x0b]).is_err());
    }
}
