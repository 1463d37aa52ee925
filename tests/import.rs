//! Keys imported from another system (plaintext, SHA-256, bcrypt or
//! argon2 hash with the key's prefix) verify as the strings their holders
//! have, through the same checks as native keys, after a reopen too; a
//! string matching no import is refused; an import is never made twice.

mod common;

use std::sync::Arc;
use std::time::Duration;

use argon2::PasswordHasher;
use keyward::{CreateOptions, Denial, ImportedSecret, ManualClock, Refusal, Store, Verdict};
use zeroize::Zeroizing;

fn plaintext(k: &str) -> ImportedSecret {
    ImportedSecret::Plaintext(Zeroizing::new(k.to_string()))
}

fn sha256_hex(k: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(k.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn argon2_phc(k: &str) -> String {
    let params = argon2::Params::new(64, 1, 1, None).unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2i, argon2::Version::V0x13, params)
        .hash_password_with_salt(k.as_bytes(), b"saltsaltsaltsalt")
        .unwrap()
        .to_string()
}

fn valid_id(v: &Verdict) -> Option<String> {
    match v {
        Verdict::Valid(g) => Some(g.key_id.to_string()),
        Verdict::Denied(_) => None,
    }
}

#[test]
fn each_kind_verifies_as_the_legacy_string_and_survives_a_reopen() {
    let (dir, path, store) = common::temp_store();
    let ip = common::ip("198.51.100.9");
    let legacy = [
        ("plain", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        ("sha", "legacy-7f3a9c0e-1b2d-4e5f-8a9b-0c1d2e3f4a5b"),
        ("bcrypt", "AbCd1234.s3cr3tpartofthekeyxyz"),
        ("argon2", "ZyXw9876.anothersecretpartabc"),
    ];
    let infos = store
        .import_many(vec![
            (
                "plain".into(),
                plaintext(legacy[0].1),
                CreateOptions::new().owner("acme"),
            ),
            (
                "sha".into(),
                ImportedSecret::Sha256(sha256_hex(legacy[1].1).to_uppercase()),
                CreateOptions::new(),
            ),
            (
                "bcrypt".into(),
                ImportedSecret::Phc {
                    hash: bcrypt::hash(legacy[2].1, 4).unwrap(),
                    prefix: "AbCd1234".into(),
                },
                CreateOptions::new(),
            ),
            (
                "argon2".into(),
                ImportedSecret::Phc {
                    hash: argon2_phc(legacy[3].1),
                    prefix: "ZyXw9876".into(),
                },
                CreateOptions::new(),
            ),
        ])
        .unwrap();
    for (info, (_, k)) in infos.iter().zip(legacy) {
        assert_eq!(
            valid_id(&store.verify(k, ip, None)),
            Some(info.id.to_string()),
            "{}",
            info.name
        );
        // Warm now: the same answer from the cache.
        assert_eq!(
            valid_id(&store.verify(k, ip, None)),
            Some(info.id.to_string())
        );
    }
    match store.verify(legacy[0].1, ip, None) {
        Verdict::Valid(g) => assert_eq!(g.owner.as_deref(), Some("acme")),
        v => panic!("{v:?}"),
    }
    // Near misses: no lookup matches (refused as not a key), or the
    // prefix matches and the hash does not.
    assert_eq!(
        store.verify("sk_live_4eC39HqLyjWDarjtT1zdp7dC", ip, None),
        Denial::Malformed
    );
    assert_eq!(store.verify("legacy-7f3a9c0e", ip, None), Denial::Malformed);
    assert_eq!(
        store.verify("AbCd1234.wrong", ip, None),
        Denial::WrongSecret
    );
    assert_eq!(
        store.verify("AbCd1234.wrong", ip, None),
        Denial::WrongSecret
    );

    // Usage is counted like any key's.
    assert_eq!(store.usage(&infos[1].id).unwrap().totals.allowed, 2);

    store.close().unwrap();
    let store = common::open(&path);
    for (info, (_, k)) in infos.iter().zip(legacy) {
        assert_eq!(
            valid_id(&store.verify(k, ip, None)),
            Some(info.id.to_string()),
            "after reopen: {}",
            info.name
        );
    }
    drop(dir);
}

#[test]
fn imports_are_refused_twice_and_bad_material_is_refused() {
    let (_dir, _path, store) = common::temp_store();
    store
        .import_key("a", plaintext("legacy-key-one"), CreateOptions::new())
        .unwrap();
    let again = store.import_key("b", plaintext("legacy-key-one"), CreateOptions::new());
    assert!(
        matches!(again, Err(keyward::KeyError::InvalidInput(_))),
        "{again:?}"
    );
    store
        .import_key(
            "c",
            ImportedSecret::Sha256(sha256_hex("x")),
            CreateOptions::new(),
        )
        .unwrap();
    assert!(
        store
            .import_key(
                "d",
                ImportedSecret::Sha256(sha256_hex("x")),
                CreateOptions::new()
            )
            .is_err()
    );
    let phc = |prefix: &str| ImportedSecret::Phc {
        hash: bcrypt::hash("PFX00001.rest", 4).unwrap(),
        prefix: prefix.into(),
    };
    store
        .import_key("e", phc("PFX00001"), CreateOptions::new())
        .unwrap();
    assert!(
        store
            .import_key("f", phc("PFX00001"), CreateOptions::new())
            .is_err(),
        "one key per prefix"
    );
    // Twice in one batch: nothing is imported.
    let n = store.key_count();
    assert!(
        store
            .import_many(vec![
                ("g".into(), plaintext("dup"), CreateOptions::new()),
                ("h".into(), plaintext("dup"), CreateOptions::new()),
            ])
            .is_err()
    );
    assert_eq!(store.key_count(), n);
    for bad in [
        plaintext(""),
        ImportedSecret::Sha256("abc".into()),
        ImportedSecret::Phc {
            hash: "$1$md5$nothing".into(),
            prefix: "PFX00002".into(),
        },
        ImportedSecret::Phc {
            hash: bcrypt::hash("k", 4).unwrap(),
            prefix: "ab".into(),
        },
        ImportedSecret::Phc {
            hash: format!("$sha256${}", sha256_hex("y")),
            prefix: "PFX00003".into(),
        },
    ] {
        let shown = format!("{bad:?}");
        assert!(
            store.import_key("bad", bad, CreateOptions::new()).is_err(),
            "{shown}"
        );
    }
    // A key of this store's own format is not imported.
    let native = store.create("n", CreateOptions::new()).unwrap();
    assert!(
        store
            .import_key("x", plaintext(native.key.as_str()), CreateOptions::new())
            .is_err()
    );
    assert_eq!(
        format!("{:?}", plaintext("topsecret")),
        "ImportedSecret::plaintext(…)"
    );
}

#[test]
fn an_imported_key_is_disabled_whitelisted_regenerated_and_deleted_like_any() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let store =
        Store::open_with(dir.path().join("s"), &common::options_with_clock(&clock)).unwrap();
    let ip = common::ip("198.51.100.9");
    let legacy = "old-system-key-0001";
    let info = store
        .import_key(
            "crm",
            plaintext(legacy),
            CreateOptions::new().restrict_to("office", "198.51.100.0/24"),
        )
        .unwrap();
    assert!(store.verify(legacy, ip, None).is_valid());
    assert_eq!(
        store.verify(legacy, common::ip("203.0.113.1"), None),
        Denial::IpNotAllowed
    );
    store.set_disabled(&info.id, true).unwrap();
    assert_eq!(store.verify(legacy, ip, None), Denial::Disabled);
    store.set_disabled(&info.id, false).unwrap();

    let fresh = store
        .regenerate(&info.id, Duration::from_secs(3600))
        .unwrap();
    assert!(
        fresh.key.as_str().starts_with(&format!("kw_{}_", info.id)),
        "a native key"
    );
    assert!(store.verify(fresh.key.as_str(), ip, None).is_valid());
    match store.verify(legacy, ip, None) {
        Verdict::Valid(g) => assert!(g.in_grace),
        v => panic!("in grace: {v:?}"),
    }
    clock.advance(Duration::from_secs(3601));
    assert!(matches!(
        store.verify(legacy, ip, None),
        Verdict::Denied(Refusal {
            denial: Denial::Rotated { .. },
            ..
        })
    ));

    store.delete(&info.id).unwrap();
    assert_eq!(store.verify(legacy, ip, None), Denial::Malformed);
    // Its lookup is free again.
    store
        .import_key("crm again", plaintext(legacy), CreateOptions::new())
        .unwrap();
    assert!(store.verify(legacy, ip, None).is_valid());
}

#[test]
fn imported_hashes_costlier_than_a_login_server_would_use_are_refused() {
    let (_dir, _path, store) = common::temp_store();
    let import = |hash: String| {
        store.import_key(
            "costly",
            ImportedSecret::Phc {
                hash,
                prefix: "AbCd1234".into(),
            },
            CreateOptions::new(),
        )
    };
    let refused = |hash: String, says: &[&str]| match import(hash.clone()) {
        Err(keyward::KeyError::InvalidInput(m)) => {
            for s in says {
                assert!(m.contains(s), "{hash}: {m}");
            }
        }
        other => panic!("{hash}: {other:?}"),
    };
    let b4 = bcrypt::hash("AbCd1234.secret", 4).unwrap();
    refused(b4.replacen("$04$", "$31$", 1), &["bcrypt cost 31", "14"]);
    refused(b4.replacen("$04$", "$15$", 1), &["bcrypt cost 15", "14"]);
    let argon = argon2_phc("AbCd1234.secret");
    let with = |params: &str| argon.replacen("m=64,t=1,p=1", params, 1);
    refused(
        with("m=4194304,t=4294967295,p=1"),
        &["memory (m, KiB) 4194304", "262144"],
    );
    refused(with("m=64,t=17,p=1"), &["time (t) 17", "16"]);
    refused(with("m=64,t=1,p=9"), &["parallelism (p) 9", "8"]);
    refused(with("m=64,t=99999999999999999999,p=1"), &["time (t)"]);
    assert_eq!(store.key_count(), 0, "nothing was imported");
    // At the bounds: imported.
    import(b4.replacen("$04$", "$14$", 1)).unwrap();
    store
        .import_key(
            "at the bounds",
            ImportedSecret::Phc {
                hash: with("m=262144,t=16,p=8"),
                prefix: "ZyXw9876".into(),
            },
            CreateOptions::new(),
        )
        .unwrap();
    assert_eq!(store.key_count(), 2);
}

#[test]
fn guesses_at_one_imported_key_take_a_small_share_of_the_hash_gate() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // The store's clock stands still while the guessing runs.
    let clock = Arc::new(ManualClock::starting_now());
    let mut options = common::options_with_clock(&clock);
    // As on a two-core machine.
    options.max_concurrent_hashes = 2;
    options.max_queued_hashes = 8;
    let store = Store::open_with(&path, &options).unwrap();
    // Its prefix is public; every guess that is hashed costs a bcrypt run.
    let secret = "AbCd1234.the-real-secret";
    let imported = store
        .import_key(
            "legacy",
            ImportedSecret::Phc {
                hash: bcrypt::hash(secret, 10).unwrap(),
                prefix: "AbCd1234".into(),
            },
            CreateOptions::new(),
        )
        .unwrap();
    let others: Vec<String> = (0..5)
        .map(|i| {
            store
                .create(&format!("other {i}"), CreateOptions::new())
                .unwrap()
                .key
                .as_str()
                .to_string()
        })
        .collect();
    store.close().unwrap();
    // Reopened: every key is cold, so each first verification hashes.
    let store = Arc::new(Store::open_with(&path, &options).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let (guessed, hashed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let guessers: Vec<_> = (0..64)
        .map(|t| {
            let (store, stop) = (store.clone(), stop.clone());
            let (guessed, hashed) = (guessed.clone(), hashed.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    n += 1;
                    let guess = format!("AbCd1234.guess-{t}-{n}");
                    match store.verify(&guess, common::ip("203.0.113.9"), None) {
                        Verdict::Denied(Refusal {
                            denial: Denial::WrongSecret,
                            ..
                        }) => {
                            hashed.fetch_add(1, Ordering::Relaxed);
                        }
                        Verdict::Denied(Refusal {
                            denial: Denial::Busy,
                            ..
                        }) => {}
                        other => panic!("a guess: {other:?}"),
                    }
                    guessed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    common::wait_until("many guesses", Duration::from_secs(60), || {
        (guessed.load(Ordering::Relaxed) >= 10_000).then_some(())
    });
    let verdicts: Vec<Verdict> = others
        .iter()
        .map(|k| store.verify(k, common::ip("198.51.100.1"), None))
        .collect();
    stop.store(true, Ordering::Release);
    for g in guessers {
        g.join().unwrap();
    }
    for v in &verdicts {
        assert!(v.is_valid(), "another key's first verification: {v:?}");
    }
    // The clock stood still: after the first miss the key rested, and no
    // other guess was hashed.
    assert_eq!(hashed.load(Ordering::Relaxed), 1);
    // Time passes; the key's holder is admitted.
    clock.advance(Duration::from_secs(60));
    let v = store.verify(secret, common::ip("198.51.100.1"), None);
    assert_eq!(valid_id(&v), Some(imported.id.to_string()), "{v:?}");
}

#[test]
fn overlapping_imports_each_verify_exact_lookups_first_then_every_prefix() {
    let (_dir, _path, store) = common::temp_store();
    let ip = common::ip("198.51.100.9");
    let phc = |hash: String, prefix: &str| ImportedSecret::Phc {
        hash,
        prefix: prefix.to_string(),
    };
    // Strings that start with one another's prefixes, of every kind.
    let short = "AbCd-short-prefix-key";
    let long = "AbCd1234-long-prefix-key";
    let under = "AbCd1234zzz-its-own-prefix-is-the-shorter";
    let plain = "AbCd1234-imported-as-plaintext";
    let sha = "AbCd-imported-as-sha256";
    let infos = store
        .import_many(vec![
            (
                "short".into(),
                phc(bcrypt::hash(short, 4).unwrap(), "AbCd"),
                CreateOptions::new(),
            ),
            (
                "long".into(),
                phc(argon2_phc(long), "AbCd1234"),
                CreateOptions::new(),
            ),
            (
                "under".into(),
                phc(bcrypt::hash(under, 4).unwrap(), "AbCd1"),
                CreateOptions::new(),
            ),
            ("plain".into(), plaintext(plain), CreateOptions::new()),
            (
                "sha".into(),
                ImportedSecret::Sha256(sha256_hex(sha)),
                CreateOptions::new(),
            ),
        ])
        .unwrap();
    let id = |i: usize| Some(infos[i].id.to_string());
    // Twice each: cold, then warm; in an order where a shorter prefix's
    // key comes after a longer one refused it.
    for _ in 0..2 {
        for (i, k) in [(2, under), (1, long), (0, short), (3, plain), (4, sha)] {
            let v = store.verify(k, ip, None);
            assert_eq!(valid_id(&v), id(i), "{k}: {v:?}");
        }
    }
    // A string that is none of them: refused, once every prefix was tried.
    for guess in ["AbCd1234-nothing", "AbCd1-nothing", "AbCd-nothing"] {
        assert!(matches!(
            store.verify(guess, ip, None),
            Verdict::Denied(Refusal {
                denial: Denial::WrongSecret | Denial::Busy,
                ..
            })
        ));
    }
}

/// djangorestframework-api-key's formats: `sha512$$` (3.x) and Django's
/// `pbkdf2_sha256$` (2.x, through `make_password`) with the key's prefix;
/// a revoked key imported disabled; a hash too costly is refused.
#[test]
fn django_hashes_verify_their_keys_and_a_revoked_one_is_imported_disabled() {
    let (_dir, path, store) = common::temp_store();
    let ip = common::ip("198.51.100.9");
    let phc = |hash: String, prefix: &str| ImportedSecret::Phc {
        hash,
        prefix: prefix.into(),
    };
    let sha512 = |key: &str| {
        use sha2::Digest;
        let hex: String = sha2::Sha512::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha512$${hex}")
    };
    let v3_key = "AbCdEfGh.sixtyfourcharactersofsecretmaterialfromdrfapikey";
    // Made by Django's PBKDF2PasswordHasher().encode(key, "saltsalt", 1000).
    let v2_key = "QwErTyUi.secret";
    let v2_hash = "pbkdf2_sha256$1000$saltsalt$4jZaFJAz/mH7E2fwvMvkvjlMFexzKtGo11jRDCkPIu0=";
    let revoked_key = "ZzZzZzZz.revokedkeyofdrfapikey";
    let infos = store
        .import_many(vec![
            (
                "v3".into(),
                phc(sha512(v3_key), "AbCdEfGh"),
                CreateOptions::new(),
            ),
            (
                "v2".into(),
                phc(v2_hash.into(), "QwErTyUi"),
                CreateOptions::new(),
            ),
            (
                "revoked".into(),
                phc(sha512(revoked_key), "ZzZzZzZz"),
                CreateOptions::new().disabled(true),
            ),
        ])
        .unwrap();
    assert!(!infos[0].disabled && infos[2].disabled);
    for (key, info) in [(v3_key, &infos[0]), (v2_key, &infos[1])] {
        assert_eq!(
            valid_id(&store.verify(key, ip, None)),
            Some(info.id.to_string()),
            "{key}"
        );
        let wrong = key.replace("secret", "Secret");
        assert_eq!(store.verify(&wrong, ip, None), Denial::WrongSecret, "{key}");
    }
    assert_eq!(store.verify(revoked_key, ip, None), Denial::Disabled);
    drop(store);
    let store = common::open(&path);
    assert!(store.verify(v3_key, ip, None).is_valid());
    assert!(store.verify(v2_key, ip, None).is_valid());
    assert_eq!(store.verify(revoked_key, ip, None), Denial::Disabled);
    let too_costly = phc(
        format!(
            "pbkdf2_sha256${}$salt$4jZaFJAz/mH7E2fwvMvkvjlMFexzKtGo11jRDCkPIu0=",
            keyward::MAX_IMPORTED_PBKDF2_ITERATIONS + 1
        ),
        "CoStLyXx",
    );
    let e = store
        .import_key("costly", too_costly, CreateOptions::new())
        .unwrap_err();
    assert!(e.to_string().contains("iterations"), "{e}");
}
