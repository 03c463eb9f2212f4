//! The search loop behind `/v1/chat/completions`: buffered model turns that may ask for a
//! search, the searches (off the async threads), then the answer, streamed or whole.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use trillim_core::generate::prompt_fits;
use trillim_core::sampler::SamplerConfig;

use super::search::{self, SearchSettings, UNAVAILABLE};
use super::{find_query, results_message, searching_marker, Provider, MAX_SEARCHES};
use crate::engines::llm::{
    Engine, Event, Finish, GenerationError, Job, ModelShared, SubmitError, TokenLogprob,
};
use hyper::{Response, StatusCode};

use crate::http::body::Body;
use crate::http::router::json_response;
use crate::openai::generate::stream_response;
use crate::openai::output::Output;
use crate::openai::ApiError;
use crate::template::Message;

/// A search, start to finish (provider, pages and formatting), gives up after this long.
pub const SEARCH_DEADLINE: Duration = Duration::from_secs(30);

/// Searches running at once at most (each holds a few threads and sockets); more wait, and
/// the wait counts toward their deadline.
static SEARCHES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// One chat request for the search harness, validated and with its first prompt tokenized.
#[derive(Debug)]
pub struct SearchRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tokens of the conversation as the model sees it.
    pub prompt: Vec<u32>,
    /// Sampling (seed resolved).
    pub sampler: SamplerConfig,
    /// Tokens per turn at most.
    pub max_tokens: Option<usize>,
    /// The request's stop strings.
    pub stop: Vec<String>,
    /// Log-probabilities of the answer's tokens.
    pub logprobs: Option<usize>,
    /// Keep generating past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Request id for logs.
    pub request_id: String,
    /// Where searches go.
    pub provider: Provider,
    /// Whether progress markers are streamed as content.
    pub markers: bool,
    /// The queue's size (named by a 429).
    pub max_queue: usize,
}

/// Why a turn could not run.
enum Fail {
    /// The engine refused or failed the job.
    Generation(GenerationError),
    /// Anything else (queue full, model unloaded).
    Api(ApiError),
}

impl Fail {
    fn into_api(self) -> ApiError {
        match self {
            Fail::Generation(e) => ApiError::generation(&e, "messages"),
            Fail::Api(e) => e,
        }
    }
}

/// What a buffered turn produced.
struct Turn {
    text: String,
    logprobs: Vec<TokenLogprob>,
    finish: Finish,
    completion_tokens: usize,
}

/// How the loop ended.
enum Ending {
    /// A turn without a search is the answer.
    Answer(Turn, usize),
    /// The answer is still to be generated from this prompt.
    Continue(Vec<u32>),
}

struct Ctx {
    engine: Arc<Engine>,
    shared: Arc<ModelShared>,
    req: SearchRequest,
}

impl Ctx {
    /// Queues a turn and waits until the engine has admitted it.
    async fn submit(
        &self,
        prompt: Vec<u32>,
        buffered: bool,
    ) -> Result<(UnboundedReceiver<Event>, usize), Fail> {
        let (tx, mut rx) = unbounded_channel();
        let mut stop = self.req.stop.clone();
        if buffered {
            // A turn that asks for a search ends at its closing tag: what a model writes
            // after it would be made up, not found.
            stop.push("</search>".into());
        }
        let job = Job {
            prompt,
            sampler: self.req.sampler,
            max_tokens: self.req.max_tokens,
            stop,
            logprobs: self.req.logprobs,
            echo_logprobs: false,
            ignore_eos: self.req.ignore_eos,
            grammar: None,
            request_id: self.req.request_id.clone(),
            events: tx,
        };
        match self.engine.submit(job) {
            Ok(()) => {}
            Err(SubmitError::Full) => {
                return Err(Fail::Api(ApiError::queue_full(self.req.max_queue)))
            }
            Err(SubmitError::Closed) => return Err(Fail::Api(ApiError::swapping())),
        }
        match rx.recv().await {
            Some(Event::Started { cached_tokens }) => Ok((rx, cached_tokens)),
            Some(Event::Error(e)) => Err(Fail::Generation(e)),
            Some(_) => Ok((rx, 0)),
            None => Err(Fail::Api(ApiError::swapping())),
        }
    }

    /// Reads a whole turn.
    async fn collect(&self, mut rx: UnboundedReceiver<Event>) -> Result<Turn, Fail> {
        let mut t = Turn {
            text: String::new(),
            logprobs: Vec::new(),
            finish: Finish::Stop,
            completion_tokens: 0,
        };
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Text { text, logprobs } => {
                    t.text.push_str(&text);
                    t.logprobs.extend(logprobs);
                }
                Event::Done {
                    finish,
                    completion_tokens,
                } => {
                    t.finish = finish;
                    t.completion_tokens = completion_tokens;
                    return Ok(t);
                }
                Event::Error(e) => return Err(Fail::Generation(e)),
                Event::Started { .. } | Event::PromptLogprobs(_) => {}
            }
        }
        Err(Fail::Api(ApiError::internal(
            "the model was unloaded before the generation finished",
        )))
    }

    /// The conversation's prompt tokens (templating and tokenizing off the async threads).
    async fn render(&self, messages: &[Message]) -> Result<Vec<u32>, Fail> {
        let sh = self.shared.clone();
        let msgs = messages.to_vec();
        tokio::task::spawn_blocking(move || {
            sh.template
                .render(&msgs, true)
                .map(|text| sh.tok.encode(&text, sh.template.is_fallback))
        })
        .await
        .map_err(|e| Fail::Api(ApiError::internal(format!("templating failed: {e}"))))?
        .map_err(|e| Fail::Api(ApiError::invalid(e.to_string())))
    }

    /// The prompt for the next turn. When the results make it too long for the context,
    /// they are cut to fit, or replaced by the "unavailable" message.
    async fn render_fitting(&self, messages: &mut [Message]) -> Result<Vec<u32>, Fail> {
        let ctx = self.shared.ctx;
        let max = self.req.max_tokens;
        let prompt = self.render(messages).await?;
        if prompt_fits(prompt.len(), max, ctx) {
            return Ok(prompt);
        }
        let over = prompt.len() + 1 - ctx;
        if let Some(last) = messages.last_mut() {
            let sh = self.shared.clone();
            let content = last.content.clone();
            last.content = tokio::task::spawn_blocking(move || {
                let count = move |s: &str| sh.tok.encode(s, false).len();
                // A little more than the overflow: the cut text re-tokenizes a little
                // differently inside the template.
                let keep = count(&content).saturating_sub(over + 8);
                if keep > 16 {
                    super::budget::truncate_exact(&content, keep, &count)
                } else {
                    UNAVAILABLE.to_string()
                }
            })
            .await
            .unwrap_or_else(|_| UNAVAILABLE.to_string());
        }
        let prompt = self.render(messages).await?;
        if prompt_fits(prompt.len(), max, ctx) {
            return Ok(prompt);
        }
        Err(Fail::Generation(GenerationError::PromptTooLong {
            prompt: prompt.len(),
            ctx,
        }))
    }

    /// Runs one search off the async threads; any failure becomes the "unavailable" text.
    async fn search(&self, query: &str) -> Result<String, String> {
        let sh = self.shared.clone();
        let settings = SearchSettings::new(self.req.provider, sh.ctx);
        let q = query.to_string();
        let job = async move {
            let _permit = SEARCHES.acquire().await;
            tokio::task::spawn_blocking(move || {
                let count = move |s: &str| sh.tok.encode(s, false).len();
                search::run(&settings, &q, &count)
            })
            .await
        };
        match tokio::time::timeout(SEARCH_DEADLINE, job).await {
            Ok(Ok(Ok(o))) => {
                tracing::info!(request_id = %self.req.request_id, query = %o.query, tokens = o.tokens,
                    results = o.results.len(), "search done");
                Ok(o.content)
            }
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(_)) => Err("the search failed".into()),
            Err(_) => Err("the search took too long".into()),
        }
    }

    /// The buffered turns: up to [`MAX_SEARCHES`] searches, `progress` told each marker.
    async fn turns(
        &self,
        messages: &mut Vec<Message>,
        first: (UnboundedReceiver<Event>, usize),
        progress: &(dyn Fn(String) + Sync),
    ) -> Result<Ending, Fail> {
        let mut pending = Some(first);
        for _ in 0..MAX_SEARCHES {
            let (rx, cached) = match pending.take() {
                Some(f) => f,
                None => {
                    self.submit(self.render_fitting(messages).await?, true)
                        .await?
                }
            };
            let mut turn = self.collect(rx).await?;
            if turn.text.contains("<search>") && !turn.text.contains("</search>") {
                // The closing tag was the stop string that ended the turn.
                if turn.finish == Finish::Stop {
                    turn.text.push_str("</search>");
                }
            }
            let Some(query) = find_query(&turn.text) else {
                return Ok(Ending::Answer(turn, cached));
            };
            progress(searching_marker(&query));
            messages.push(Message {
                role: "assistant".into(),
                content: turn.text,
                ..Default::default()
            });
            match self.search(&query).await {
                Ok(content) => {
                    messages.push(results_message(&content));
                    progress(super::SYNTHESIZING.to_string());
                }
                Err(e) => {
                    tracing::info!(request_id = %self.req.request_id, %query, error = %e, "search unavailable");
                    messages.push(Message {
                        role: "user".into(),
                        content: UNAVAILABLE.into(),
                        ..Default::default()
                    });
                    progress(super::UNAVAILABLE_MARKER.to_string());
                    break;
                }
            }
        }
        Ok(Ending::Continue(self.render_fitting(messages).await?))
    }
}

/// Answers a chat request through the search loop: `out` is the response being built. The
/// first turn is admitted before anything is answered (a full queue still gets 429).
pub async fn respond(
    engine: Arc<Engine>,
    req: SearchRequest,
    mut out: Output,
    stream: bool,
) -> Result<Response<Body>, ApiError> {
    let shared = engine.shared.clone();
    let prompt = req.prompt.clone();
    let markers = req.markers && stream;
    let mut messages = req.messages.clone();
    let ctx = Ctx {
        engine,
        shared,
        req,
    };
    let first = ctx.submit(prompt, true).await.map_err(Fail::into_api)?;
    if !stream {
        let ending = ctx
            .turns(&mut messages, first, &|_| {})
            .await
            .map_err(Fail::into_api)?;
        let events = match ending {
            Ending::Answer(turn, cached) => answer_events(turn, cached),
            Ending::Continue(prompt) => {
                let (mut rx, cached) = ctx.submit(prompt, false).await.map_err(Fail::into_api)?;
                let mut evs = vec![Event::Started {
                    cached_tokens: cached,
                }];
                while let Some(ev) = rx.recv().await {
                    let end = matches!(ev, Event::Done { .. } | Event::Error(_));
                    evs.push(ev);
                    if end {
                        break;
                    }
                }
                evs
            }
        };
        for ev in events {
            out.absorb(ev);
        }
        return Ok(json_response(StatusCode::OK, &out.response()?));
    }
    let (tx, rx) = unbounded_channel();
    let watch = tx.clone();
    tokio::spawn(async move {
        let work = stream_turns(ctx, messages, first, tx, markers);
        // A client that goes away ends the loop: pending turns are cancelled by dropping
        // their receivers, a running search finishes on its own within its deadlines.
        tokio::select! {
            _ = watch.closed() => {}
            _ = work => {}
        }
    });
    Ok(stream_response(out, rx))
}

/// Runs the loop for a terminal chat: `marker` gets each progress marker, `text` the
/// answer as it streams. Returns the messages the exchange added (search turns, results and
/// the answer), to carry the conversation on.
pub async fn converse(
    engine: Arc<Engine>,
    req: SearchRequest,
    marker: &(dyn Fn(String) + Sync),
    text: &mut dyn FnMut(&str),
) -> Result<Vec<Message>, ApiError> {
    let shared = engine.shared.clone();
    let prompt = req.prompt.clone();
    let mut messages = req.messages.clone();
    let before = messages.len();
    let ctx = Ctx {
        engine,
        shared,
        req,
    };
    let first = ctx.submit(prompt, true).await.map_err(Fail::into_api)?;
    let ending = ctx
        .turns(&mut messages, first, marker)
        .await
        .map_err(Fail::into_api)?;
    let answer = match ending {
        Ending::Answer(turn, _) => {
            text(&turn.text);
            turn.text
        }
        Ending::Continue(prompt) => {
            let (rx, _) = ctx.submit(prompt, false).await.map_err(Fail::into_api)?;
            let mut rx = rx;
            let mut answer = String::new();
            while let Some(ev) = rx.recv().await {
                match ev {
                    Event::Text { text: t, .. } => {
                        text(&t);
                        answer.push_str(&t);
                    }
                    Event::Done { .. } => break,
                    Event::Error(e) => return Err(ApiError::generation(&e, "messages")),
                    _ => {}
                }
            }
            answer
        }
    };
    messages.push(Message {
        role: "assistant".into(),
        content: answer,
        ..Default::default()
    });
    Ok(messages.split_off(before))
}

/// Events that deliver a buffered turn as the answer.
fn answer_events(turn: Turn, cached: usize) -> Vec<Event> {
    vec![
        Event::Started {
            cached_tokens: cached,
        },
        Event::Text {
            text: turn.text,
            logprobs: turn.logprobs,
        },
        Event::Done {
            finish: turn.finish,
            completion_tokens: turn.completion_tokens,
        },
    ]
}

async fn stream_turns(
    ctx: Ctx,
    mut messages: Vec<Message>,
    first: (UnboundedReceiver<Event>, usize),
    tx: UnboundedSender<Event>,
    markers: bool,
) {
    let marker_tx = tx.clone();
    let progress = move |m: String| {
        if markers {
            let _ = marker_tx.send(Event::Text {
                text: format!("{m}\n"),
                logprobs: Vec::new(),
            });
        }
    };
    let fail = |f: Fail, tx: &UnboundedSender<Event>| match f {
        Fail::Generation(e) => {
            let _ = tx.send(Event::Error(e));
        }
        // The stream already started; ending it without [DONE] is the signal left.
        Fail::Api(e) => tracing::warn!(error = %e.message, "search stream ended early"),
    };
    let ending = match ctx.turns(&mut messages, first, &progress).await {
        Ok(e) => e,
        Err(f) => return fail(f, &tx),
    };
    match ending {
        Ending::Answer(turn, cached) => {
            for ev in answer_events(turn, cached) {
                let _ = tx.send(ev);
            }
        }
        Ending::Continue(prompt) => {
            let (mut rx, cached) = match ctx.submit(prompt, false).await {
                Ok(r) => r,
                Err(f) => return fail(f, &tx),
            };
            let _ = tx.send(Event::Started {
                cached_tokens: cached,
            });
            while let Some(ev) = rx.recv().await {
                let end = matches!(ev, Event::Done { .. } | Event::Error(_));
                if tx.send(ev).is_err() || end {
                    break;
                }
            }
        }
    }
}
