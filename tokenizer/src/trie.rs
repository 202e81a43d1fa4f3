//! Byte tries: darts-clone double arrays (charsmaps), a fast double-array vocabulary trie and a pointer trie.

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

/// A prefix trie over byte strings with `u32` values, stored as a double array: the child of unit `s` by byte
/// `b` is unit `base(s) + b + 1` when that unit's `check` is `s`.
#[derive(Debug, Clone, Default)]
pub struct Trie {
    /// (base, check, value or NONE) per unit; unit 0 is the root.
    units: Vec<(u32, u32, u32)>,
}

const NONE: u32 = u32::MAX;

/// The first unit at or after `i` that is free (units past the end are free).
fn find_free(next: &mut [usize], used: &[bool], i: usize) -> usize {
    let mut j = i;
    // Follow skip pointers over used units, then compress the path.
    while j < used.len() && used[j] {
        let n = next
            .get(j)
            .copied()
            .filter(|&n| n != usize::MAX && n > j)
            .unwrap_or(j + 1);
        j = n;
    }
    let mut k = i;
    while k < j && k < used.len() && used[k] {
        let n = next
            .get(k)
            .copied()
            .filter(|&n| n != usize::MAX && n > k)
            .unwrap_or(k + 1);
        if k < next.len() {
            next[k] = j;
        }
        k = n;
    }
    j
}

impl Trie {
    /// Builds a trie from `(key, value)` pairs; a repeated key keeps its last value.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a [u8], u32)>) -> Self {
        // A pointer trie first, then a breadth-first placement into the double array.
        let mut children: Vec<Vec<(u8, u32)>> = vec![Vec::new()];
        let mut values: Vec<u32> = vec![NONE];
        for (key, value) in entries {
            let mut node = 0usize;
            for &b in key {
                node = match children[node].iter().find(|(l, _)| *l == b) {
                    Some(&(_, c)) => c as usize,
                    None => {
                        let c = values.len();
                        values.push(NONE);
                        children.push(Vec::new());
                        children[node].push((b, c as u32));
                        c
                    }
                };
            }
            values[node] = value;
        }
        let mut units: Vec<(u32, u32, u32)> = vec![(0, NONE, values[0])];
        let mut used: Vec<bool> = vec![true];
        let mut used_base: std::collections::HashSet<u32> = std::collections::HashSet::new();
        // next_free[i]: a candidate for the first free unit at or after i (path-compressed).
        let mut next_free: Vec<usize> = vec![1];
        let mut queue = std::collections::VecDeque::from([(0usize, 0usize)]); // (pointer node, unit)
        while let Some((node, unit)) = queue.pop_front() {
            let ch = &mut children[node];
            if ch.is_empty() {
                continue;
            }
            ch.sort_unstable_by_key(|e| e.0);
            let min_label = ch[0].0 as usize;
            let mut p = find_free(&mut next_free, &used, min_label + 2);
            let base = loop {
                let base = p - min_label - 1;
                let fits = !used_base.contains(&(base as u32))
                    && ch
                        .iter()
                        .all(|&(l, _)| used.get(base + l as usize + 1).is_none_or(|u| !u));
                if fits {
                    break base;
                }
                p = find_free(&mut next_free, &used, p + 1);
            };
            used_base.insert(base as u32);
            units[unit].0 = base as u32;
            for &(l, c) in ch.iter() {
                let t = base + l as usize + 1;
                if t >= units.len() {
                    units.resize(t + 1, (0, NONE, NONE));
                    used.resize(t + 1, false);
                }
                used[t] = true;
                if next_free.len() <= t + 1 {
                    next_free.resize(t + 2, usize::MAX);
                }
                next_free[t] = t + 1;
                units[t] = (0, unit as u32, values[c as usize]);
                queue.push_back((c as usize, t));
            }
        }
        Trie { units }
    }

    /// Calls `f(length, value)` for each key that is a prefix of `key`, shortest first.
    #[inline]
    pub fn common_prefix_search(&self, key: &[u8], mut f: impl FnMut(usize, u32)) {
        let units = &self.units;
        if units.is_empty() {
            return;
        }
        let mut s = 0usize;
        for (i, &b) in key.iter().enumerate() {
            let t = units[s].0 as usize + b as usize + 1;
            match units.get(t) {
                Some(&(_, check, value)) if check == s as u32 => {
                    if value != NONE {
                        f(i + 1, value);
                    }
                    s = t;
                }
                _ => return,
            }
        }
    }

    /// The value of exactly `key`.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<u32> {
        let units = &self.units;
        if units.is_empty() || key.is_empty() {
            return None;
        }
        let mut s = 0usize;
        for &b in key {
            let t = units[s].0 as usize + b as usize + 1;
            match units.get(t) {
                Some(&(_, check, _)) if check == s as u32 => s = t,
                _ => return None,
            }
        }
        let v = units[s].2;
        (v != NONE).then_some(v)
    }
}

/// A pointer-based prefix trie: slower to search than [`Trie`] but fast to build, for the trainer's large,
/// short-lived piece sets.
#[derive(Debug, Clone, Default)]
pub struct PointerTrie {
    /// Per node: (value or u32::MAX, first edge index, edge count).
    nodes: Vec<(u32, u32, u32)>,
    /// Edges sorted by label within each node: (label, child node).
    edges: Vec<(u8, u32)>,
    root: Vec<u32>,
}

impl PointerTrie {
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
        PointerTrie { nodes, edges, root }
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
    fn double_array_matches_pointer_trie() {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut x = 12345u64;
        for _ in 0..3000 {
            let len = 1 + (x % 7) as usize;
            let mut k = Vec::new();
            for _ in 0..len {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                k.push([b'a', b'b', b'c', 0xe2, 0x96, 0x81, 0xff, b'z'][(x >> 33) as usize % 8]);
            }
            keys.push(k);
        }
        let da = Trie::new(
            keys.iter()
                .enumerate()
                .map(|(i, k)| (k.as_slice(), i as u32)),
        );
        let pt = PointerTrie::new(
            keys.iter()
                .enumerate()
                .map(|(i, k)| (k.as_slice(), i as u32)),
        );
        for k in &keys {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let probe = [k.as_slice(), b"abc"].concat();
            da.common_prefix_search(&probe, |l, v| a.push((l, v)));
            pt.common_prefix_search(&probe, |l, v| b.push((l, v)));
            assert_eq!(a, b);
            assert!(da.get(k).is_some());
        }
    }

    #[test]
    fn corrupt_double_array_does_not_panic() {
        let da = DoubleArray::from_bytes(&[0xff; 13]);
        da.common_prefix_search(b"hello", |_, _| {});
        DoubleArray::from_bytes(&[]).common_prefix_search(b"x", |_, _| {});
    }
}
