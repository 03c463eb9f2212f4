//! The generation step machine both servers use (`trillim_core::generate::Decoder`), driven
//! with a real tokenizer and forced rows of logits: stop strings across tokens, held-back
//! prefixes, the finish reasons, keep and streaming buffers, a refusing client.
#![forbid(unsafe_code)]

use trillim_core::format::gguf::Gguf;
use trillim_core::generate::{logprobs, Decoder, End, Finish, LogprobBufs, StepIo};
use trillim_core::sampler::{Candidate, SamplerConfig};
use trillim_core::tokenizer::Tokenizer;
use trillim_tests::testdata;

struct Run {
    text: String,
    pieces: usize,
    tokens: Vec<u32>,
    end: End,
}

/// How a run is set up.
#[derive(Clone, Copy)]
struct Setup {
    max_tokens: Option<usize>,
    ctx: usize,
    buf: usize,
    keep: bool,
    /// The client takes this many pieces, then refuses.
    refuse_after: usize,
}

const SETUP: Setup = Setup {
    max_tokens: None,
    ctx: 1000,
    buf: 256,
    keep: false,
    refuse_after: usize::MAX,
};

/// Generates `script` (token ids forced by one-hot logits) through a decoder.
fn run(tok: &Tokenizer<'_>, script: &[u32], stops: &[&str], setup: Setup) -> Run {
    let Setup {
        max_tokens,
        ctx,
        buf,
        keep,
        refuse_after,
    } = setup;
    let n = tok.n_vocab();
    let mut cands = vec![Candidate::default(); n];
    let cfg = SamplerConfig {
        temperature: 0.0,
        ..SamplerConfig::default()
    };
    let mut dec = Decoder::new(cfg, max_tokens, false, ctx, vec![0u8; buf], keep);
    let mut text = String::new();
    let mut pieces = 0;
    let mut emit = |p: &str| {
        if pieces >= refuse_after {
            return false;
        }
        pieces += 1;
        text.push_str(p);
        true
    };
    let mut history = vec![1u32];
    let mut tokens = Vec::new();
    let mut end = None;
    for &id in script {
        let mut logits = vec![0f32; n];
        logits[id as usize] = 100.0;
        let step = dec.step(
            tok,
            StepIo {
                logits: &mut logits,
                history: &history,
                cands: &mut cands,
                stops,
                logprobs: None,
                emit: &mut emit,
            },
        );
        if let Some(t) = step.token {
            tokens.push(t);
            history.push(t);
        }
        if let Some(e) = step.end {
            end = Some(e);
            break;
        }
    }
    let end = dec.finish(
        end.unwrap_or(End::Finished(Finish::Length)),
        stops,
        &mut emit,
    );
    if keep {
        assert_eq!(dec.text(), text, "keep mode keeps what was sent");
    }
    assert_eq!(dec.generated(), tokens.len());
    Run {
        text,
        pieces,
        tokens,
        end,
    }
}

fn with_tokenizer(f: impl FnOnce(&Tokenizer<'_>)) {
    let bytes = std::fs::read(testdata("models/tiny-bitnet-tq2_0.gguf")).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let mut mem = vec![0u32; Tokenizer::mem_words_for_gguf(&g).unwrap()];
    let tok = Tokenizer::from_gguf(&g, &mut mem).unwrap();
    f(&tok)
}

fn encode(tok: &Tokenizer<'_>, text: &str) -> Vec<u32> {
    let mut out = vec![0u32; tok.max_tokens(text)];
    let n = tok.encode(text, false, false, &mut out).unwrap();
    out.truncate(n);
    out
}

#[test]
fn text_stops_and_finish_reasons() {
    with_tokenizer(|tok| {
        let ids = encode(tok, "Hello world. The end is near, END of story");
        let plain = run(tok, &ids, &[], Setup { buf: 64, ..SETUP });
        assert_eq!(plain.text, "Hello world. The end is near, END of story");
        assert_eq!(plain.end, End::Finished(Finish::Length));
        assert_eq!(plain.tokens, ids);

        for keep in [false, true] {
            // A stop string split across tokens cuts the text before it, and the tokens after
            // it are never generated.
            let r = run(tok, &ids, &["END", "zzz"], Setup { keep, ..SETUP });
            assert_eq!(r.text, "Hello world. The end is near, ");
            assert_eq!(r.end, End::Finished(Finish::Stop));
            assert!(r.tokens.len() < ids.len());
            // "near" is held while it could become "near!", then released at the end.
            let so_near = encode(tok, "so near");
            let r = run(tok, &so_near, &["near!"], Setup { keep, ..SETUP });
            assert_eq!(r.text, "so near");
            assert_eq!(r.end, End::Finished(Finish::Length));
        }

        // max_tokens, the context (prompt + completion), and max_tokens 0.
        let r = run(
            tok,
            &ids,
            &[],
            Setup {
                max_tokens: Some(3),
                buf: 64,
                ..SETUP
            },
        );
        assert_eq!((r.tokens.len(), r.end), (3, End::Finished(Finish::Length)));
        let r = run(
            tok,
            &ids,
            &[],
            Setup {
                ctx: 5,
                buf: 64,
                ..SETUP
            },
        );
        assert_eq!(
            r.tokens.len(),
            4,
            "one prompt token + 4 generated fill 5 positions"
        );
        let r = run(
            tok,
            &ids,
            &[],
            Setup {
                max_tokens: Some(0),
                buf: 64,
                ..SETUP
            },
        );
        assert_eq!((r.tokens.len(), r.text.as_str()), (0, ""));

        // An end-of-generation token ends it, uncounted and unshown.
        let eos = tok.eos().unwrap();
        let mut script = ids[..2].to_vec();
        script.push(eos);
        script.extend_from_slice(&ids[2..]);
        let r = run(tok, &script, &[], Setup { buf: 64, ..SETUP });
        assert_eq!(r.tokens, ids[..2]);
        assert_eq!(r.end, End::Finished(Finish::Stop));

        // A full keep buffer ends with "length" and keeps whole pieces only.
        let r = run(
            tok,
            &ids,
            &[],
            Setup {
                buf: 8,
                keep: true,
                ..SETUP
            },
        );
        assert_eq!(r.end, End::Finished(Finish::Length));
        assert!(r.text.len() <= 8 && "Hello world.".starts_with(&r.text));

        // A client that refuses text halts the generation, and nothing more is emitted.
        let r = run(
            tok,
            &ids,
            &[],
            Setup {
                buf: 64,
                refuse_after: 2,
                ..SETUP
            },
        );
        assert_eq!((r.end, r.pieces), (End::Halted, 2));
    });
}

#[test]
fn multibyte_text_is_never_split() {
    with_tokenizer(|tok| {
        let s = "naïve café — déjà 🙂 Ünïcödé";
        let ids = encode(tok, s);
        let r = run(tok, &ids, &["🙂"], SETUP);
        assert_eq!(r.text, "naïve café — déjà ");
        let r = run(tok, &ids, &[], Setup { buf: 64, ..SETUP });
        assert_eq!(r.text, s);
        assert!(r.pieces >= 1);
    });
}

#[test]
fn logprobs_come_from_the_logits_before_sampling() {
    with_tokenizer(|tok| {
        let n = tok.n_vocab();
        let mut logits: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.5).collect();
        // What the log-probabilities must be: the logits as the model gave them.
        let unchanged = logits.clone();
        let mut want_top = vec![(0u32, 0f64); 3];
        logprobs(&unchanged, 6, &mut want_top);
        let cfg = SamplerConfig {
            temperature: 0.0,
            repetition_penalty: 2.0,
            ..SamplerConfig::default()
        };
        let mut dec = Decoder::new(cfg, None, false, 100, vec![0u8; 64], false);
        let (mut raw, mut top) = (vec![0f32; n], vec![(0u32, 0f64); 3]);
        let mut cands = vec![Candidate::default(); n];
        let step = dec.step(
            tok,
            StepIo {
                logits: &mut logits,
                // Token 6 is penalized: the sampler moves on, the log-probabilities do not.
                history: &[6],
                cands: &mut cands,
                stops: &[] as &[&str],
                logprobs: Some(LogprobBufs {
                    raw: &mut raw,
                    top: &mut top,
                }),
                emit: &mut |_| true,
            },
        );
        let id = step.token.unwrap();
        assert_ne!(id, 6);
        assert_eq!(top, want_top);
        // The sampled token's own log-probability, over the logits before the penalty moved
        // the sampler elsewhere, against a log-softmax computed here.
        let lse = unchanged
            .iter()
            .map(|&v| (v as f64).exp())
            .sum::<f64>()
            .ln();
        let want = unchanged[id as usize] as f64 - lse;
        assert!(
            (step.logprob.unwrap() - want).abs() < 1e-9,
            "{:?} vs {want}",
            step.logprob
        );
    });
}
