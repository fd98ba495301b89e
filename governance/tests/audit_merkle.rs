//! RFC 6962 Merkle trees: the transparency-dev/merkle reference vectors and
//! probes (tests/data/audit/), and proofs for every (m, n) up to 64.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mxp_governance::audit::merkle::{
    EMPTY_ROOT, consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency,
    verify_inclusion,
};
use mxp_governance::audit::{Hash, MerkleLog, TreeHead};
use proptest::prelude::*;
use serde_json::Value;
use sha2::Digest as _;

fn data(name: &str) -> String {
    let path = format!("{}/tests/data/audit/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn hex32(s: &str) -> Hash {
    let bytes: Vec<u8> = (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// A probe's base64 value as a hash. The reference probes also use values
/// that are not 32 bytes ("don't care" roots, garbage); this typed API
/// cannot take them (a caller could not even construct them), so they stand
/// in as SHA-256("stand-in " ‖ role ‖ bytes): equal values in one role stay
/// equal, values of another role or of real hashes differ.
fn probe_hash(v: &Value, role: &str) -> Hash {
    let bytes = B64.decode(v.as_str().unwrap_or("")).unwrap();
    match <[u8; 32]>::try_from(bytes.as_slice()) {
        Ok(h) => h,
        Err(_) => {
            let mut h = sha2::Sha256::new();
            h.update(b"stand-in ");
            h.update(role.as_bytes());
            h.update(&bytes);
            h.finalize().into()
        }
    }
}

fn probe_proof(v: &Value) -> Vec<Hash> {
    v.as_array()
        .map(|a| a.iter().map(|h| probe_hash(h, "proof")).collect())
        .unwrap_or_default()
}

#[test]
fn roots_and_leaf_hashes_match_the_reference() {
    let v: Value = serde_json::from_str(&data("merkle_roots.json")).unwrap();
    let leaves: Vec<Vec<u8>> = v["leaves_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| unhex(s.as_str().unwrap()))
        .collect();
    let roots: Vec<Hash> = v["roots_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| hex32(s.as_str().unwrap()))
        .collect();
    let hashes: Vec<Hash> = v["leaf_hashes_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| hex32(s.as_str().unwrap()))
        .collect();
    assert_eq!(roots.len(), 9);
    assert_eq!(roots[0], EMPTY_ROOT);
    let lh: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
    assert_eq!(lh, hashes);
    let mut log = MerkleLog::new();
    assert_eq!(log.root(), roots[0]);
    for (n, l) in leaves.iter().enumerate() {
        log.append_data(l);
        assert_eq!(root(&lh[..n + 1]), roots[n + 1], "size {}", n + 1);
        assert_eq!(log.root(), roots[n + 1], "size {}", n + 1);
    }
    for (n, r) in roots.iter().enumerate() {
        assert_eq!(log.root_at(n as u64).unwrap(), *r);
    }
}

#[test]
fn reference_inclusion_probes() {
    let probes: Vec<Value> = serde_json::from_str(&data("merkle_inclusion_probes.json")).unwrap();
    assert_eq!(probes.len(), 98);
    let mut ok = 0;
    for p in &probes {
        let got = verify_inclusion(
            &probe_hash(&p["leafHash"], "leaf"),
            p["leafIdx"].as_u64().unwrap(),
            p["treeSize"].as_u64().unwrap(),
            &probe_proof(&p["proof"]),
            &probe_hash(&p["root"], "root"),
        );
        let want_err = p["wantErr"].as_bool().unwrap();
        assert_eq!(got.is_err(), want_err, "{}: {got:?}", p["file"]);
        ok += usize::from(!want_err);
    }
    assert!(ok >= 5);
}

#[test]
fn reference_consistency_probes() {
    let probes: Vec<Value> = serde_json::from_str(&data("merkle_consistency_probes.json")).unwrap();
    assert_eq!(probes.len(), 98);
    for p in &probes {
        let old = TreeHead {
            size: p["size1"].as_u64().unwrap(),
            root: probe_hash(&p["root1"], "root"),
        };
        let new = TreeHead {
            size: p["size2"].as_u64().unwrap(),
            root: probe_hash(&p["root2"], "root"),
        };
        let got = verify_consistency(&old, &new, &probe_proof(&p["proof"]));
        assert_eq!(
            got.is_err(),
            p["wantErr"].as_bool().unwrap(),
            "{}: {got:?}",
            p["file"]
        );
    }
}

#[test]
fn reference_proofs_are_generated_exactly() {
    // The happy-path probes were generated from the reference leaves: the
    // proofs built here must be the same hashes, in the same order.
    let v: Value = serde_json::from_str(&data("merkle_roots.json")).unwrap();
    let lh: Vec<Hash> = v["leaf_hashes_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| hex32(s.as_str().unwrap()))
        .collect();
    let probes: Vec<Value> = serde_json::from_str(&data("merkle_inclusion_probes.json")).unwrap();
    let mut checked = 0;
    for p in probes.iter().filter(|p| p["desc"] == "happy path") {
        let size = p["treeSize"].as_u64().unwrap() as usize;
        let idx = p["leafIdx"].as_u64().unwrap();
        if size > lh.len() || probe_hash(&p["leafHash"], "leaf") != lh[idx as usize] {
            continue;
        }
        assert_eq!(
            inclusion_proof(&lh[..size], idx).unwrap(),
            probe_proof(&p["proof"]),
            "{}",
            p["file"]
        );
        checked += 1;
    }
    let probes: Vec<Value> = serde_json::from_str(&data("merkle_consistency_probes.json")).unwrap();
    for p in probes.iter().filter(|p| p["desc"] == "happy path") {
        let (m, n) = (
            p["size1"].as_u64().unwrap(),
            p["size2"].as_u64().unwrap() as usize,
        );
        if n > lh.len() || probe_hash(&p["root2"], "root") != root(&lh[..n]) {
            continue;
        }
        let proof = if m as usize == n {
            vec![]
        } else {
            consistency_proof(&lh[..n], m).unwrap()
        };
        assert_eq!(proof, probe_proof(&p["proof"]), "{}", p["file"]);
        checked += 1;
    }
    assert!(checked >= 6, "{checked}");
}

fn leaves(n: u64, salt: u64) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(i ^ salt.rotate_left(17)).to_le_bytes()))
        .collect()
}

#[test]
fn every_proof_up_to_64_verifies_and_wrong_inputs_fail() {
    let lh = leaves(64, 0);
    let mut log = MerkleLog::new();
    for l in &lh {
        log.append(*l);
    }
    let wrong = leaf_hash(b"not a leaf");
    for n in 1..=64u64 {
        let rn = log.root_at(n).unwrap();
        assert_eq!(rn, root(&lh[..n as usize]));
        for i in 0..n {
            let p = log.inclusion_proof(i, n).unwrap();
            assert_eq!(p, inclusion_proof(&lh[..n as usize], i).unwrap());
            verify_inclusion(&lh[i as usize], i, n, &p, &rn).unwrap();
            assert!(verify_inclusion(&wrong, i, n, &p, &rn).is_err());
            assert!(verify_inclusion(&lh[i as usize], i, n, &p, &wrong).is_err());
            // The same proof does not prove the leaf in the next larger tree.
            if n < 64 {
                let next = log.root_at(n + 1).unwrap();
                assert!(verify_inclusion(&lh[i as usize], i, n + 1, &p, &next).is_err());
            }
            if n > 1 {
                assert!(verify_inclusion(&lh[i as usize], (i + 1) % n, n, &p, &rn).is_err());
            }
            let mut extra = p.clone();
            extra.push(wrong);
            assert!(verify_inclusion(&lh[i as usize], i, n, &extra, &rn).is_err());
        }
        assert!(log.inclusion_proof(n, n).is_err());
        for m in 1..=n {
            let rm = log.root_at(m).unwrap();
            let p = log.consistency_proof(m, n).unwrap();
            assert_eq!(p, consistency_proof(&lh[..n as usize], m).unwrap());
            let old = TreeHead { size: m, root: rm };
            let new = TreeHead { size: n, root: rn };
            verify_consistency(&old, &new, &p).unwrap();
            assert!(verify_consistency(&TreeHead { root: wrong, ..old }, &new, &p).is_err());
            assert!(verify_consistency(&old, &TreeHead { root: wrong, ..new }, &p).is_err());
            if m < n {
                assert!(verify_consistency(&new, &old, &p).is_err());
                let mut bad = p.clone();
                bad[0][0] ^= 1;
                assert!(verify_consistency(&old, &new, &bad).is_err());
                assert!(verify_consistency(&old, &new, &p[..p.len() - 1]).is_err());
            }
        }
        assert!(log.consistency_proof(0, n).is_err());
    }
    assert!(log.root_at(65).is_err());
    assert!(log.consistency_proof(3, 65).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_trees_prove_inclusion_and_consistency(salt in any::<u64>(), n in 1u64..=64, m_frac in 0.0f64..1.0, i_frac in 0.0f64..1.0, flip in 0usize..32) {
        let lh = leaves(n, salt);
        let mut log = MerkleLog::new();
        for l in &lh { log.append(*l); }
        let m = 1 + ((n - 1) as f64 * m_frac) as u64;
        let i = ((m - 1) as f64 * i_frac) as u64;
        let rm = log.root_at(m).unwrap();
        let rn = log.root();
        let p = log.inclusion_proof(i, m).unwrap();
        prop_assert!(verify_inclusion(&lh[i as usize], i, m, &p, &rm).is_ok());
        let mut other = lh[i as usize];
        other[flip] ^= 0x80;
        prop_assert!(verify_inclusion(&other, i, m, &p, &rm).is_err());
        let c = log.consistency_proof(m, n).unwrap();
        let old = TreeHead { size: m, root: rm };
        let new = TreeHead { size: n, root: rn };
        prop_assert!(verify_consistency(&old, &new, &c).is_ok());
        let mut bad_root = rm;
        bad_root[flip] ^= 1;
        let bad_old = TreeHead { root: bad_root, ..old };
        prop_assert!(verify_consistency(&bad_old, &new, &c).is_err());
        if !c.is_empty() {
            let mut bad = c.clone();
            bad[flip % c.len()][flip] ^= 1;
            prop_assert!(verify_consistency(&old, &new, &bad).is_err());
        }
    }

    #[test]
    fn verification_never_panics_on_arbitrary_input(index in any::<u64>(), size in any::<u64>(), old in any::<u64>(), proof in proptest::collection::vec(any::<[u8; 32]>(), 0..70)) {
        let _ = verify_inclusion(&[0; 32], index, size, &proof, &[1; 32]);
        let _ = verify_consistency(&TreeHead { size: old, root: [2; 32] }, &TreeHead { size, root: [3; 32] }, &proof);
    }
}
