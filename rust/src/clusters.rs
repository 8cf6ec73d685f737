//! Union-find clustering of verified near-duplicate pairs and the choice of the kept
//! representative of each cluster.
use crate::lsh::{candidate_pairs, ReferenceIndex};
use crate::minhash::jaccard_estimate;
use rayon::prelude::*;

/// Disjoint sets with path halving and union by size.
#[derive(Clone, Debug)]
pub struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    pub fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    pub fn len(&self) -> usize {
        self.parent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = self.parent[x as usize];
        }
        x
    }

    /// Returns true when `a` and `b` were in different sets.
    pub fn union(&mut self, a: u32, b: u32) -> bool {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        if self.size[ra as usize] < self.size[rb as usize] {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb as usize] = ra;
        self.size[ra as usize] += self.size[rb as usize];
        true
    }

    /// Component label of every element: the smallest member index of its set.
    pub fn labels_min_index(&mut self) -> Vec<u32> {
        let n = self.len();
        let mut min_of_root = vec![u32::MAX; n];
        let roots: Vec<u32> = (0..n as u32).map(|i| self.find(i)).collect();
        for (i, &r) in roots.iter().enumerate() {
            let m = &mut min_of_root[r as usize];
            if (i as u32) < *m {
                *m = i as u32;
            }
        }
        roots.iter().map(|&r| min_of_root[r as usize]).collect()
    }
}

/// Which member of a cluster is kept.
#[derive(Clone, Debug)]
pub enum Keep {
    /// Smallest row index.
    First,
    /// Most characters (ties: smallest index).
    Longest(Vec<u64>),
    /// Highest quality value (nulls/NaN lowest; ties: smallest index).
    Quality(Vec<f64>),
}

impl Keep {
    /// Is row `a` preferred to row `b`?
    fn better(&self, a: u32, b: u32) -> bool {
        let idx = a < b;
        match self {
            Keep::First => idx,
            Keep::Longest(len) => {
                let (la, lb) = (len[a as usize], len[b as usize]);
                la > lb || (la == lb && idx)
            }
            Keep::Quality(q) => {
                let f = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
                let (qa, qb) = (f(q[a as usize]), f(q[b as usize]));
                qa > qb || (qa == qb && idx)
            }
        }
    }
}

/// Result of near-duplicate detection, one entry per row.
#[derive(Clone, Debug, PartialEq)]
pub struct DedupResult {
    pub cluster_id: Vec<u64>,
    pub duplicate_of: Vec<Option<u64>>,
    pub max_jaccard: Vec<f64>,
}

/// Cluster rows of a flat signature matrix: LSH candidates, verified by estimated
/// Jaccard >= `threshold`, union-find components, representative per `keep`.
pub fn cluster_signatures(
    sigs: &[u32],
    num_perm: usize,
    active: &[bool],
    bands: usize,
    rows: usize,
    threshold: f64,
    keep: &Keep,
) -> DedupResult {
    let n = active.len();
    let pairs = candidate_pairs(sigs, num_perm, active, bands, rows);
    let est: Vec<f32> = pairs
        .par_iter()
        .with_min_len(1024)
        .map(|&(i, j)| {
            let (i, j) = (i as usize, j as usize);
            jaccard_estimate(
                &sigs[i * num_perm..(i + 1) * num_perm],
                &sigs[j * num_perm..(j + 1) * num_perm],
            ) as f32
        })
        .collect();
    let mut max_j = vec![0f64; n];
    let mut uf = UnionFind::new(n);
    for (&(i, j), &e) in pairs.iter().zip(&est) {
        let e = e as f64;
        if e > max_j[i as usize] {
            max_j[i as usize] = e;
        }
        if e > max_j[j as usize] {
            max_j[j as usize] = e;
        }
        if e >= threshold {
            uf.union(i, j);
        }
    }
    drop(pairs);
    finish_clusters(uf, keep, max_j)
}

/// Turn a union-find into cluster ids (smallest member index) and representatives.
pub fn finish_clusters(mut uf: UnionFind, keep: &Keep, max_jaccard: Vec<f64>) -> DedupResult {
    let n = uf.len();
    let labels = uf.labels_min_index();
    // Representative per label (label = smallest index, so indexing by label is fine).
    let mut rep: Vec<u32> = (0..n as u32).collect();
    let mut size = vec![0u32; n];
    for (i, &l) in labels.iter().enumerate() {
        let i = i as u32;
        size[l as usize] += 1;
        if i != l && keep.better(i, rep[l as usize]) {
            rep[l as usize] = i;
        }
    }
    let duplicate_of = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let r = rep[l as usize];
            if size[l as usize] > 1 && r != i as u32 {
                Some(r as u64)
            } else {
                None
            }
        })
        .collect();
    DedupResult {
        cluster_id: labels.into_iter().map(|l| l as u64).collect(),
        duplicate_of,
        max_jaccard,
    }
}

/// Per query row: best reference match (index, estimated Jaccard) among LSH candidates.
pub fn query_reference(
    index: &ReferenceIndex,
    ref_sigs: &[u32],
    sigs: &[u32],
    active: &[bool],
) -> Vec<(Option<u64>, f64)> {
    let p = index.num_perm;
    active
        .par_iter()
        .enumerate()
        .with_min_len(64)
        .map_init(Vec::new, |cands, (i, &act)| {
            if !act {
                return (None, 0.0);
            }
            let sig = &sigs[i * p..(i + 1) * p];
            index.query(sig, cands);
            let mut best: (Option<u64>, f64) = (None, 0.0);
            for &r in cands.iter() {
                let e = jaccard_estimate(sig, &ref_sigs[r as usize * p..(r as usize + 1) * p]);
                if best.0.is_none() || e > best.1 {
                    best = (Some(r as u64), e);
                }
            }
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_rules() {
        let mut uf = UnionFind::new(4);
        uf.union(0, 2);
        uf.union(2, 3);
        let r = finish_clusters(uf.clone(), &Keep::First, vec![0.0; 4]);
        assert_eq!(r.cluster_id, vec![0, 1, 0, 0]);
        assert_eq!(r.duplicate_of, vec![None, None, Some(0), Some(0)]);
        let r = finish_clusters(uf.clone(), &Keep::Longest(vec![1, 9, 5, 5]), vec![0.0; 4]);
        assert_eq!(r.duplicate_of, vec![Some(2), None, None, Some(2)]);
        let r = finish_clusters(
            uf,
            &Keep::Quality(vec![f64::NAN, 0.0, 0.1, 0.7]),
            vec![0.0; 4],
        );
        assert_eq!(r.duplicate_of, vec![Some(3), None, Some(3), None]);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Naive connected components by repeated relaxation.
    fn naive_labels(n: usize, edges: &[(u32, u32)]) -> Vec<u32> {
        let mut label: Vec<u32> = (0..n as u32).collect();
        loop {
            let mut changed = false;
            for &(a, b) in edges {
                let m = label[a as usize].min(label[b as usize]);
                for x in [a, b] {
                    if label[x as usize] != m {
                        label[x as usize] = m;
                        changed = true;
                    }
                }
            }
            if !changed {
                return label;
            }
        }
    }

    proptest! {
        #[test]
        fn union_find_matches_naive_components(
            n in 1usize..60,
            raw in prop::collection::vec((0u32..60, 0u32..60), 0..80),
        ) {
            let edges: Vec<(u32, u32)> = raw.into_iter().map(|(a, b)| (a % n as u32, b % n as u32)).collect();
            let mut uf = UnionFind::new(n);
            for &(a, b) in &edges {
                uf.union(a, b);
            }
            let labels = uf.labels_min_index();
            prop_assert_eq!(&labels, &naive_labels(n, &edges));
            // find is idempotent and same-set iff same label
            for i in 0..n as u32 {
                let r = uf.find(i);
                prop_assert_eq!(uf.find(r), r);
                prop_assert!(labels[i as usize] <= i);
            }
            // the size of each root equals its component size
            let r = finish_clusters(uf, &Keep::First, vec![0.0; n]);
            for i in 0..n {
                match r.duplicate_of[i] {
                    Some(d) => {
                        prop_assert_eq!(d, r.cluster_id[i]);
                        prop_assert!(d < i as u64);
                    }
                    None => prop_assert!(r.cluster_id[i] == i as u64),
                }
            }
        }
    }
}
