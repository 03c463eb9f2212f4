//! Path safety and model resolution of the store.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "trillim-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&p).unwrap();
        // Canonical, so prefix comparisons in tests match what the store computes.
        TempDir(p.canonicalize().unwrap())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn touch(p: &Path, bytes: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// A minimal GGUF v3 file: `general.architecture` and the given tensors (type id, dims), with
/// zeroed data.
pub(crate) fn gguf_bytes(arch: &str, tensors: &[(&str, u32, &[u64])]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&1u64.to_le_bytes());
    string(&mut out, "general.architecture");
    out.extend_from_slice(&8u32.to_le_bytes());
    string(&mut out, arch);
    let mut offset = 0u64;
    let mut data_len = 0u64;
    for (name, ty, dims) in tensors {
        string(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in *dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        let elem = match ty {
            0 => 4,
            1 => 2,
            _ => panic!("test writer knows F32 and F16 only"),
        };
        let size = dims.iter().product::<u64>() * elem;
        data_len = offset + size;
        offset = (offset + size).div_ceil(32) * 32;
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    out.resize(out.len() + data_len as usize, 0);
    out
}

#[test]
fn component_rules() {
    for ok in ["bartowski", "SmolLM2-135M-Instruct-GGUF", "a.b_c-d", "x"] {
        assert!(valid_component(ok), "{ok}");
    }
    let long = "a".repeat(97);
    for bad in [
        "",
        ".",
        "..",
        ".hidden",
        "na me",
        "tab\t",
        "nl\n",
        "ñ",
        "a\\b",
        "a:b",
        "~",
        "$HOME",
        "a\0b",
        long.as_str(),
    ] {
        assert!(!valid_component(bad), "{bad:?}");
    }
}

#[test]
fn parse_id_rules() {
    assert_eq!(parse_id("org/name").unwrap(), vec!["org", "name"]);
    assert!(matches!(parse_id("org/.."), Err(StoreError::Forbidden(_))));
    assert!(matches!(parse_id("./org"), Err(StoreError::Forbidden(_))));
    assert!(matches!(parse_id("org//name"), Err(StoreError::Invalid(_))));
    assert!(matches!(parse_id("/org/name"), Err(StoreError::Invalid(_))));
    assert!(matches!(parse_id("a/b/c/d/e"), Err(StoreError::Invalid(_))));
    assert!(matches!(parse_id("org/na me"), Err(StoreError::Invalid(_))));
}

#[test]
fn split_names() {
    let s = SplitName::parse("Model-Q4_K_M-00001-of-00003.gguf").unwrap();
    assert_eq!((s.prefix, s.index, s.count), ("Model-Q4_K_M", 1, 3));
    assert_eq!(s.file_name(2), "Model-Q4_K_M-00002-of-00003.gguf");
    assert!(SplitName::parse("m-00004-of-00003.gguf").is_none());
    assert!(SplitName::parse("m-00000-of-00003.gguf").is_none());
    assert!(SplitName::parse("m-0001-of-00003.gguf").is_none());
    assert!(SplitName::parse("model.gguf").is_none());
    assert!(SplitName::parse("-00001-of-00002.gguf").is_none());
    assert!(SplitName::parse("x-00001-of-00002.bin").is_none());
    assert_eq!(model_stem("x-00001-of-00002.gguf"), "x");
    assert_eq!(model_stem("x.Q4_0.GGUF"), "x.Q4_0");
}

#[test]
fn from_env_paths() {
    let s = Store::new("/srv/models");
    assert_eq!(s.root(), Path::new("/srv/models"));
    assert!(Store::from_env().root().ends_with("models"));
    assert_eq!(
        s.model_dir("org/name").unwrap(),
        PathBuf::from("/srv/models/org/name")
    );
    assert!(s.model_dir("org").is_err());
    assert!(s.model_dir("org/../x").is_err());
}

/// root/ with org/one (single file), org/split (split set), org/two (two models),
/// org/empty (no model); outside/ holds a model outside the store.
fn fixture() -> (TempDir, Store, PathBuf) {
    let t = TempDir::new("store");
    let root = t.path().join("models");
    let outside = t.path().join("outside");
    touch(&root.join("org/one/one-Q4_0.gguf"), b"one");
    touch(&root.join("org/one/mmproj-one-f16.gguf"), b"proj");
    touch(&root.join("org/one/config.json"), b"{}");
    touch(&root.join("org/split/s-00001-of-00002.gguf"), b"s1");
    touch(&root.join("org/split/s-00002-of-00002.gguf"), b"s2");
    touch(&root.join("org/two/a.gguf"), b"a");
    touch(&root.join("org/two/b.gguf"), b"b");
    touch(&root.join("org/empty/README.md"), b"");
    touch(&outside.join("secret/model.gguf"), b"secret");
    let store = Store::new(&root);
    (t, store, outside)
}

#[test]
fn api_resolves_store_ids() {
    let (_t, store, _) = fixture();
    let r = store.resolve_api("org/one").unwrap();
    assert_eq!(r.id, "org/one");
    assert_eq!(r.name, "one");
    assert_eq!(r.gguf, store.root().join("org/one/one-Q4_0.gguf"));
    assert_eq!(
        r.dir.as_deref(),
        Some(store.root().join("org/one").as_path())
    );

    let r = store.resolve_api("org/split").unwrap();
    assert_eq!(r.gguf, store.root().join("org/split/s-00001-of-00002.gguf"));

    let r = store.resolve_api("org/two/b.gguf").unwrap();
    assert_eq!((r.id.as_str(), r.name.as_str()), ("org/two/b", "b"));

    // An absolute path inside the store is accepted.
    let abs = store.root().join("org/one");
    let r = store.resolve_api(abs.to_str().unwrap()).unwrap();
    assert_eq!(r.id, "org/one");
}

#[test]
fn api_rejects_escapes() {
    let (t, store, outside) = fixture();
    for bad in [
        "..",
        "../outside/secret",
        "org/../../outside/secret",
        "./org/one",
        "org/one/..",
        "org/./one",
        "org\\..\\..\\outside",
    ] {
        let e = store.resolve_api(bad).unwrap_err();
        assert!(matches!(e, StoreError::Forbidden(_)), "{bad}: {e:?}");
        assert_eq!(e.status(), 403);
    }
    let abs_out = outside.join("secret");
    let e = store.resolve_api(abs_out.to_str().unwrap()).unwrap_err();
    assert!(matches!(e, StoreError::Forbidden(_)), "{e:?}");
    let e = store.resolve_api("/etc").unwrap_err();
    assert!(matches!(e, StoreError::Forbidden(_)), "{e:?}");
    // Lexically inside, but `..` climbs out.
    let sneaky = format!("{}/org/../../outside/secret", store.root().display());
    let e = store.resolve_api(&sneaky).unwrap_err();
    assert!(matches!(e, StoreError::Forbidden(_)), "{e:?}");
    // The root itself is not a model.
    let e = store
        .resolve_api(store.root().to_str().unwrap())
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    drop(t);
}

#[cfg(unix)]
#[test]
fn api_rejects_symlinks_out_of_the_store() {
    use std::os::unix::fs::symlink;
    let (_t, store, outside) = fixture();
    let root = store.root();
    // A model directory that is a link to a directory outside.
    symlink(outside.join("secret"), root.join("org/evil")).unwrap();
    let e = store.resolve_api("org/evil").unwrap_err();
    assert!(matches!(e, StoreError::Forbidden(_)), "{e:?}");
    // An organisation directory that is a link outside.
    symlink(&outside, root.join("evilorg")).unwrap();
    let e = store.resolve_api("evilorg/secret").unwrap_err();
    assert!(matches!(e, StoreError::Forbidden(_)), "{e:?}");
    // A directory inside whose model file links outside.
    fs::create_dir_all(root.join("org/linkfile")).unwrap();
    symlink(
        outside.join("secret/model.gguf"),
        root.join("org/linkfile/model.gguf"),
    )
    .unwrap();
    let e = store.resolve_api("org/linkfile").unwrap_err();
    assert!(matches!(e, StoreError::Forbidden(_)), "{e:?}");
    let e = store.resolve_api("org/linkfile/model.gguf").unwrap_err();
    assert!(matches!(e, StoreError::Forbidden(_)), "{e:?}");
    // A dangling link is just missing.
    symlink(root.join("nowhere"), root.join("org/dangling")).unwrap();
    let e = store.resolve_api("org/dangling").unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e:?}");
    // Links that stay inside the store are fine.
    symlink(root.join("org/one"), root.join("org/alias")).unwrap();
    let r = store.resolve_api("org/alias").unwrap();
    assert!(r.gguf.ends_with("one-Q4_0.gguf"));
    // The command line trusts its user and follows links anywhere.
    let r = store.resolve_cli("org/evil").unwrap();
    assert!(r.gguf.ends_with("model.gguf"));
}

#[test]
fn api_not_found_and_invalid() {
    let (_t, store, _) = fixture();
    let e = store.resolve_api("org/missing").unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e:?}");
    assert_eq!(e.status(), 404);
    let e = store.resolve_api("org/empty").unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    assert_eq!(e.status(), 400);
    assert!(e.to_string().contains("contains no GGUF model file"), "{e}");
    let e = store.resolve_api("org/two").unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    assert!(e.to_string().contains("a.gguf, b.gguf"), "{e}");
    for odd in [
        "org/na me",
        "org/x\ny",
        "org/ünï",
        "org//one",
        "",
        "org/one;rm",
    ] {
        let e = store.resolve_api(odd).unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{odd:?}: {e:?}");
    }
    // A store that does not exist yet: unknown ids are missing, escapes still forbidden.
    let empty = Store::new(store.root().join("nope"));
    assert!(matches!(
        empty.resolve_api("org/name"),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        empty.resolve_api("../x"),
        Err(StoreError::Forbidden(_))
    ));
}

#[test]
fn cli_resolves_files_dirs_and_split_sets() {
    let (t, store, outside) = fixture();
    // A file outside the store: named by its stem.
    let f = outside.join("secret/model.gguf");
    let r = store.resolve_cli(f.to_str().unwrap()).unwrap();
    assert_eq!((r.id.as_str(), r.name.as_str()), ("model", "model"));
    assert_eq!(r.gguf, f);
    assert_eq!(r.dir.as_deref(), Some(outside.join("secret").as_path()));
    // A directory outside the store: named after it.
    let r = store
        .resolve_cli(outside.join("secret").to_str().unwrap())
        .unwrap();
    assert_eq!((r.id.as_str(), r.gguf.clone()), ("secret", f.clone()));

    // A split set (first part chosen), preferring a single file when both exist.
    let d = t.path().join("mixed");
    touch(&d.join("big-00001-of-00002.gguf"), b"1");
    touch(&d.join("big-00002-of-00002.gguf"), b"2");
    let r = store.resolve_cli(d.to_str().unwrap()).unwrap();
    assert!(r.gguf.ends_with("big-00001-of-00002.gguf"));
    assert_eq!(r.id, "mixed");
    touch(&d.join("small.gguf"), b"s");
    let r = store.resolve_cli(d.to_str().unwrap()).unwrap();
    assert!(r.gguf.ends_with("small.gguf"));
    // Not the first part.
    let e = store
        .resolve_cli(d.join("big-00002-of-00002.gguf").to_str().unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("big-00001-of-00002.gguf"), "{e}");
    // Several unrelated files: an error listing them.
    touch(&d.join("other.gguf"), b"o");
    let e = store.resolve_cli(d.to_str().unwrap()).unwrap_err();
    assert!(
        e.to_string().contains("other.gguf") && e.to_string().contains("small.gguf"),
        "{e}"
    );
    // Split sets without their first part are not candidates.
    let d2 = t.path().join("broken");
    touch(&d2.join("x-00002-of-00002.gguf"), b"2");
    let e = store.resolve_cli(d2.to_str().unwrap()).unwrap_err();
    assert!(e.to_string().contains("without their first part"), "{e}");
}

#[test]
fn cli_resolves_store_ids() {
    let (_t, store, _) = fixture();
    let r = store.resolve_cli("org/one").unwrap();
    assert_eq!((r.id.as_str(), r.name.as_str()), ("org/one", "one"));
    // A file of a directory with several models.
    let r = store.resolve_cli("org/two/a.gguf").unwrap();
    assert_eq!((r.id.as_str(), r.name.as_str()), ("org/two/a", "a"));
    // The only model of its directory keeps the directory's id, also by absolute path.
    let p = store.root().join("org/one/one-Q4_0.gguf");
    let r = store.resolve_cli(p.to_str().unwrap()).unwrap();
    assert_eq!(r.id, "org/one");
    let e = store.resolve_cli("org/unknown").unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)));
    assert!(e.to_string().contains("trillim pull org/unknown"), "{e}");
    assert!(matches!(store.resolve_cli(""), Err(StoreError::Invalid(_))));
}

#[test]
fn list_reports_headers_sizes_and_errors() {
    let t = TempDir::new("list");
    let root = t.path().to_path_buf();
    let good = gguf_bytes(
        "llama",
        &[
            ("token_embd.weight", 0, &[64, 8]),
            ("output_norm.weight", 0, &[64]),
            ("blk.0.attn_q.weight", 1, &[64, 64]),
        ],
    );
    touch(&root.join("org/good/good.gguf"), &good);
    touch(&root.join("org/good/good.gguf.part"), b"partial");
    touch(&root.join("org/bad/bad.gguf"), b"not a gguf file at all");
    touch(&root.join("org/split/s-00001-of-00002.gguf"), &good);
    touch(&root.join("org/split/s-00002-of-00002.gguf"), &good);
    touch(&root.join("org/two/x.gguf"), &good);
    touch(&root.join("org/two/y.gguf"), b"");
    touch(&root.join(".hidden/h/h.gguf"), &good);
    let models = Store::new(&root).list().unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "org/bad",
            "org/good",
            "org/split",
            "org/two/x.gguf",
            "org/two/y.gguf"
        ]
    );
    let good_m = &models[1];
    assert_eq!(good_m.size, good.len() as u64);
    assert_eq!(good_m.summary.arch.as_deref(), Some("llama"));
    assert_eq!(
        good_m.summary.types,
        vec![("F32".to_string(), 2), ("F16".to_string(), 1)]
    );
    // Metadata is incomplete, so the loader's reason is reported.
    assert!(good_m.summary.error.is_some());
    let bad = &models[0];
    assert_eq!(bad.summary.arch, None);
    assert!(
        bad.summary
            .error
            .as_deref()
            .unwrap()
            .contains("not a GGUF file"),
        "{:?}",
        bad.summary.error
    );
    let split = &models[2];
    assert_eq!(split.files.len(), 2);
    assert_eq!(split.size, 2 * good.len() as u64);
    assert_eq!(split.summary.types[0], ("F32".to_string(), 4));
    assert!(models[4]
        .summary
        .error
        .as_deref()
        .unwrap()
        .contains("empty"));

    let table = cli::format_table(&models);
    let first = table.lines().next().unwrap();
    assert!(first.starts_with("ID") && first.contains("SIZE") && first.contains("ARCH"));
    assert!(table.contains("F32:2,F16:1"), "{table}");

    // A store root that does not exist is an empty store.
    assert!(Store::new(root.join("missing")).list().unwrap().is_empty());
}
