//! Byte tries: a reader for darts-clone double arrays (SentencePiece's precompiled charsmap) and a compact
//! prefix trie for vocabularies.

/// A darts-clone double array read from little-endian `u32` units, as stored in a precompiled charsmap.
#[derive(Debug, Clone)]
pub struct DoubleArray {
    units: Vec<u32>,
}

impl DoubleArray {
    /// Reads the units; a trailing partial unit is ignored, as darts-clone does.
    pub fn from_bytes(blob: &[u8]) -> Self {
        let units = blob
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        DoubleArray { units }
    }

    #[inline]
    fn offset(u: u32) -> usize {
        ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize
    }

    /// Calls `f(length, value)` for each key in the array that is a prefix of `key`, shortest first.
    /// Out-of-range positions in a corrupt array end the search instead of panicking.
    pub fn common_prefix_search(&self, key: &[u8], mut f: impl FnMut(usize, u32)) {
        let Some(&root) = self.units.first() else {
            return;
        };
        let mut node_pos = Self::offset(root);
        for (i, &b) in key.iter().enumerate() {
            node_pos ^= b as usize;
            let Some(&unit) = self.units.get(node_pos) else {
                return;
            };
            if unit & ((1 << 31) | 0xff) != u32::from(b) {
                return;
            }
            node_pos ^= Self::offset(unit);
            if (unit >> 8) & 1 == 1 {
                let Some(&leaf) = self.units.get(node_pos) else {
                    return;
                };
                f(i + 1, leaf & ((1 << 31) - 1));
            }
        }
    }
}

/// A prefix trie over byte strings with `u32` values; the root has a direct 256-entry table.
#[derive(Debug, Clone, Default)]
pub struct Trie {
    /// Per node: (value or u32::MAX, first edge index, edge count).
    nodes: Vec<(u32, u32, u32)>,
    /// Edges sorted by label within each node: (label, child node).
    edges: Vec<(u8, u32)>,
    root: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl Trie {
    /// Builds a trie from `(key, value)` pairs; a repeated key keeps its last value.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a [u8], u32)>) -> Self {
        // Build with a temporary map-of-children representation, then flatten.
        let mut children: Vec<Vec<(u8, u32)>> = vec![Vec::new()];
        let mut values: Vec<u32> = vec![NONE];
        for (key, value) in entries {
            let mut node = 0usize;
            for &b in key {
                let next = match children[node].iter().find(|(l, _)| *l == b) {
                    Some(&(_, c)) => c as usize,
                    None => {
                        let c = values.len();
                        values.push(NONE);
                        children.push(Vec::new());
                        children[node].push((b, c as u32));
                        c
                    }
                };
                node = next;
            }
            values[node] = value;
        }
        let mut nodes = Vec::with_capacity(values.len());
        let mut edges = Vec::new();
        for (ch, v) in children.iter_mut().zip(&values) {
            ch.sort_unstable_by_key(|e| e.0);
            nodes.push((*v, edges.len() as u32, ch.len() as u32));
            edges.extend_from_slice(ch);
        }
        let mut root = vec![NONE; 256];
        for &(l, c) in &children[0] {
            root[l as usize] = c;
        }
        Trie { nodes, edges, root }
    }

    #[inline]
    fn child(&self, node: u32, b: u8) -> Option<u32> {
        let (_, first, n) = self.nodes[node as usize];
        let es = &self.edges[first as usize..(first + n) as usize];
        if es.len() <= 8 {
            es.iter().find(|e| e.0 == b).map(|e| e.1)
        } else {
            es.binary_search_by_key(&b, |e| e.0).ok().map(|i| es[i].1)
        }
    }

    /// Calls `f(length, value)` for each key that is a prefix of `key`, shortest first.
    #[inline]
    pub fn common_prefix_search(&self, key: &[u8], mut f: impl FnMut(usize, u32)) {
        let Some(&first) = key.first() else { return };
        if self.root.is_empty() {
            return;
        }
        let mut node = self.root[first as usize];
        if node == NONE {
            return;
        }
        let mut i = 1;
        loop {
            let v = self.nodes[node as usize].0;
            if v != NONE {
                f(i, v);
            }
            if i >= key.len() {
                return;
            }
            match self.child(node, key[i]) {
                Some(c) => node = c,
                None => return,
            }
            i += 1;
        }
    }

    /// The value of exactly `key`.
    pub fn get(&self, key: &[u8]) -> Option<u32> {
        let mut found = None;
        self.common_prefix_search(key, |len, v| {
            if len == key.len() {
                found = Some(v);
            }
        });
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_search() {
        let t = Trie::new([
            (&b"a"[..], 1),
            (b"ab", 2),
            (b"abc", 3),
            (b"b", 4),
            (b"abd", 5),
        ]);
        let mut got = Vec::new();
        t.common_prefix_search(b"abcd", |l, v| got.push((l, v)));
        assert_eq!(got, vec![(1, 1), (2, 2), (3, 3)]);
        assert_eq!(t.get(b"abd"), Some(5));
        assert_eq!(t.get(b"abx"), None);
        assert_eq!(t.get(b""), None);
    }

    #[test]
    fn corrupt_double_array_does_not_panic() {
        let da = DoubleArray::from_bytes(&[0xff; 13]);
        da.common_prefix_search(b"hello", |_, _| {});
        DoubleArray::from_bytes(&[]).common_prefix_search(b"x", |_, _| {});
    }
}
