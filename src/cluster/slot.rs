//! The hash slot of a key, as Redis Cluster computes it (`keyHashSlot` in cluster.c): CRC16
//! (XMODEM) of the key, or of its hash tag (the bytes between the first `{` and the first `}`
//! after it, when not empty), modulo 16384. The one place in the crate that computes slots.

/// How many slots a cluster has.
pub const SLOTS: usize = 16384;

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of `key` that is hashed: its hash tag, or the whole key.
pub fn hash_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The slot of `key` (0..16384).
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_part(key)) & (SLOTS as u16 - 1)
}

/// Which slots a set of inclusive ranges covers, as a table indexed by slot.
pub fn table(ranges: &[(u16, u16)]) -> Vec<bool> {
    let mut t = vec![false; SLOTS];
    for &(a, b) in ranges {
        for s in a..=b.min(SLOTS as u16 - 1) {
            t[s as usize] = true;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_check_value() {
        // The CRC-16/XMODEM check value, and the example of the cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"123456789"), 0x31C3 & 16383);
    }

    #[test]
    fn hash_tags() {
        assert_eq!(hash_part(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_part(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_part(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_part(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_part(b"{"), b"{");
        assert_eq!(key_slot(b"a{x}b"), key_slot(b"x"));
    }

    #[test]
    fn tables() {
        let t = table(&[(0, 2), (16383, 16383)]);
        assert!(t[0] && t[2] && !t[3] && t[16383]);
    }
}
