//! Chat prompts without a template engine: the families of `tokenizer.chat_template` in common
//! use are recognised from the template text and rendered natively into a caller's buffer.
//!
//! Supported families (output identical to rendering the model's Jinja template):
//! - **ChatML** (`<|im_start|>role\ncontent<|im_end|>\n`), including a default system prompt
//!   the template inserts when the conversation does not start with one (SmolLM2's "You are a
//!   helpful AI assistant named SmolLM, trained by Hugging Face", Qwen2's);
//! - **Qwen** (Qwen 2.5 and Qwen 3): ChatML whose `tool` messages become a user turn of
//!   `<tool_response>` blocks and whose other unknown roles are left out; Qwen 3's template
//!   also drops the reasoning (`<think>…</think>`) of assistant turns before the last user
//!   message and writes a think block into the assistant turns after it;
//! - **Llama 3** (`<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>`, content
//!   trimmed, BOS text first), and the Llama 3.1/3.2 variant whose system header carries the
//!   knowledge cut-off and a date;
//! - **BitNet b1.58 2B4T** (`Role: content<|eot_id|>`, role capitalised, content trimmed,
//!   `Assistant: ` as the generation prompt);
//! - **Gemma** 2 and 3 (`<start_of_turn>role\ncontent<end_of_turn>\n`, `assistant` written
//!   `model`, content trimmed, BOS text first, `<start_of_turn>model\n` as the generation
//!   prompt): turns must alternate starting with `user`, as the templates demand; Gemma 3's puts
//!   a leading system message before the first turn's content, Gemma 2's refuses it.
//!
//! Anything else is refused with [`ChatError::UnsupportedTemplate`] rather than guessed at,
//! including ChatML templates with other reasoning (`</think>`) rules.
//! A model without a template gets ChatML, as llama.cpp does.

use core::fmt;

/// One chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// `system`, `user`, `assistant`, ...
    pub role: &'a str,
    /// Text content.
    pub content: &'a str,
}

/// Why a conversation could not be rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatError {
    /// The model's chat template is not one of the supported families.
    UnsupportedTemplate,
    /// The output buffer is too small for the prompt.
    BufferTooSmall,
    /// The template refuses the conversation (its `raise_exception` message).
    Refused(&'static str),
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatError::UnsupportedTemplate => write!(
                f,
                "the model's chat template is not supported (supported: ChatML, Qwen 2.5, \
                 Qwen 3, Llama 3, BitNet b1.58, Gemma 2 and 3); use /v1/completions with a formatted prompt"
            ),
            ChatError::BufferTooSmall => write!(f, "the rendered prompt is too long"),
            ChatError::Refused(why) => write!(f, "the model's chat template refuses it: {why}"),
        }
    }
}

/// A template family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `<|im_start|>` / `<|im_end|>`.
    ChatMl,
    /// Qwen 2.5's ChatML: `tool` messages as `<tool_response>` user turns, other roles dropped.
    Qwen,
    /// Qwen 3's: as [`Family::Qwen`], with its reasoning rules for assistant turns.
    Qwen3,
    /// Llama 3 headers.
    Llama3,
    /// Llama 3.1+ headers with a dated system block.
    Llama31,
    /// BitNet b1.58 2B4T's `Role: content<|eot_id|>`.
    BitNet,
    /// Gemma 2's `<start_of_turn>` turns (no system role).
    Gemma2,
    /// Gemma 3's: as Gemma 2's, a leading system message prefixed to the first turn.
    Gemma3,
}

/// A recognised chat template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatTemplate<'t> {
    /// The family.
    pub family: Family,
    /// System prompt inserted when the first message is not a system message.
    pub default_system: Option<&'t str>,
    /// Whether the template starts with the BOS token's text.
    pub bos: bool,
}

/// Date Llama 3.1 templates print when none is given.
pub const LLAMA31_DEFAULT_DATE: &str = "26 Jul 2024";

fn contains(h: &str, n: &str) -> bool {
    h.contains(n)
}

/// The default system prompt of a ChatML template: the text of a literal
/// `'<|im_start|>system\n...<|im_end|>` that the template emits when `messages[0]` is not a
/// system message.
fn chatml_default_system(t: &str) -> Option<&str> {
    if !(contains(t, "!= 'system'")
        || contains(t, "!= \"system\"")
        || contains(t, "== 'system'")
        || contains(t, "== \"system\""))
    {
        return None;
    }
    for (i, _) in t.match_indices("<|im_start|>system") {
        let after = &t[i + "<|im_start|>system".len()..];
        let body = after
            .strip_prefix('\n')
            .or_else(|| after.strip_prefix("\\n"))?;
        let end = body.find("<|im_end|>")?;
        let text = &body[..end];
        // Only literal text, never template code or escapes.
        if !text.is_empty() && !text.contains(['\'', '"', '{', '}', '\\', '\n', '+']) {
            return Some(text);
        }
    }
    None
}

impl<'t> ChatTemplate<'t> {
    /// Recognises the family of `template` (the model's `tokenizer.chat_template`); `None`
    /// (no template) gives plain ChatML.
    pub fn detect(template: Option<&'t str>) -> Result<ChatTemplate<'t>, ChatError> {
        let Some(t) = template else {
            return Ok(ChatTemplate {
                family: Family::ChatMl,
                default_system: None,
                bos: false,
            });
        };
        if contains(t, "<|im_start|>") && contains(t, "<|im_end|>") {
            let qwen = contains(t, "<tool_response>");
            let family = match (qwen, contains(t, "</think>")) {
                (false, false) => Family::ChatMl,
                (true, false) => Family::Qwen,
                (true, true) if contains(t, "last_query_index") => Family::Qwen3,
                _ => return Err(ChatError::UnsupportedTemplate),
            };
            return Ok(ChatTemplate {
                family,
                default_system: chatml_default_system(t),
                bos: false,
            });
        }
        if contains(t, "<|start_header_id|>") && contains(t, "<|end_header_id|>") {
            let family = if contains(t, "Cutting Knowledge Date") {
                Family::Llama31
            } else {
                Family::Llama3
            };
            return Ok(ChatTemplate {
                family,
                default_system: None,
                bos: contains(t, "bos_token"),
            });
        }
        if contains(t, "capitalize") && contains(t, "<|eot_id|>") && contains(t, "Assistant: ") {
            return Ok(ChatTemplate {
                family: Family::BitNet,
                default_system: None,
                bos: contains(t, "bos_token"),
            });
        }
        if contains(t, "<start_of_turn>") && contains(t, "<end_of_turn>") {
            let family = if contains(t, "first_user_prefix") {
                Family::Gemma3
            } else if contains(t, "System role not supported") {
                Family::Gemma2
            } else {
                return Err(ChatError::UnsupportedTemplate);
            };
            return Ok(ChatTemplate {
                family,
                default_system: None,
                bos: contains(t, "bos_token"),
            });
        }
        Err(ChatError::UnsupportedTemplate)
    }

    /// Renders `messages` into `out` and returns the prompt text. `bos_text` is the BOS
    /// token's text (used when the template starts with it); `date` is the date Llama 3.1
    /// templates print (`"26 Jul 2024"` when `None`).
    pub fn render<'o>(
        &self,
        messages: &[Message<'_>],
        add_generation_prompt: bool,
        bos_text: &str,
        date: Option<&str>,
        out: &'o mut [u8],
    ) -> Result<&'o str, ChatError> {
        let mut w = Out { buf: out, n: 0 };
        if self.bos {
            w.put(bos_text)?;
        }
        match self.family {
            Family::ChatMl => {
                for (i, m) in messages.iter().enumerate() {
                    if i == 0 && m.role != "system" {
                        if let Some(sys) = self.default_system {
                            w.puts(&["<|im_start|>system\n", sys, "<|im_end|>\n"])?;
                        }
                    }
                    w.puts(&["<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n"])?;
                }
                if add_generation_prompt {
                    w.put("<|im_start|>assistant\n")?;
                }
            }
            Family::Qwen | Family::Qwen3 => {
                self.render_qwen(messages, &mut w)?;
                if add_generation_prompt {
                    w.put("<|im_start|>assistant\n")?;
                }
            }
            Family::Llama3 | Family::Llama31 => {
                let mut rest = messages;
                if self.family == Family::Llama31 {
                    let mut system = "";
                    if let Some((first, tail)) = messages.split_first() {
                        if first.role == "system" {
                            system = py_trim(first.content);
                            rest = tail;
                        }
                    }
                    w.puts(&[
                        "<|start_header_id|>system<|end_header_id|>\n\n",
                        "Cutting Knowledge Date: December 2023\nToday Date: ",
                        date.unwrap_or(LLAMA31_DEFAULT_DATE),
                        "\n\n",
                        system,
                        "<|eot_id|>",
                    ])?;
                }
                for m in rest {
                    w.puts(&[
                        "<|start_header_id|>",
                        m.role,
                        "<|end_header_id|>\n\n",
                        py_trim(m.content),
                        "<|eot_id|>",
                    ])?;
                }
                if add_generation_prompt {
                    w.put("<|start_header_id|>assistant<|end_header_id|>\n\n")?;
                }
            }
            Family::Gemma2 | Family::Gemma3 => {
                self.render_gemma(messages, &mut w)?;
                if add_generation_prompt {
                    w.put("<start_of_turn>model\n")?;
                }
            }
            Family::BitNet => {
                for m in messages {
                    w.capitalized(m.role)?;
                    w.puts(&[": ", py_trim(m.content), "<|eot_id|>"])?;
                }
                if add_generation_prompt {
                    w.put("Assistant: ")?;
                }
            }
        }
        let n = w.n;
        // Only whole `&str`s and whole characters were copied in.
        core::str::from_utf8(&w.buf[..n]).map_err(|_| ChatError::BufferTooSmall)
    }
}

impl ChatTemplate<'_> {
    /// The message loop of Gemma 2's and Gemma 3's templates (text content).
    fn render_gemma(&self, messages: &[Message<'_>], w: &mut Out<'_>) -> Result<(), ChatError> {
        let (mut prefix, mut turns) = (None, messages);
        if let Some((first, rest)) = messages.split_first() {
            if first.role == "system" {
                if self.family == Family::Gemma2 {
                    return Err(ChatError::Refused("System role not supported"));
                }
                (prefix, turns) = (Some(first.content), rest);
            }
        }
        for (i, m) in turns.iter().enumerate() {
            if (m.role == "user") != (i % 2 == 0) {
                return Err(ChatError::Refused(
                    "Conversation roles must alternate user/assistant/user/assistant/...",
                ));
            }
            let role = if m.role == "assistant" {
                "model"
            } else {
                m.role
            };
            w.puts(&["<start_of_turn>", role, "\n"])?;
            if let (0, Some(p)) = (i, prefix) {
                w.puts(&[p, "\n\n"])?;
            }
            w.puts(&[py_trim(m.content), "<end_of_turn>\n"])?;
        }
        Ok(())
    }

    /// The message loop of Qwen 2.5's and Qwen 3's templates (without tools or tool calls).
    fn render_qwen(&self, messages: &[Message<'_>], w: &mut Out<'_>) -> Result<(), ChatError> {
        let first_system = messages.first().is_some_and(|m| m.role == "system");
        if first_system {
            w.puts(&["<|im_start|>system\n", messages[0].content, "<|im_end|>\n"])?;
        } else if let Some(sys) = self.default_system {
            w.puts(&["<|im_start|>system\n", sys, "<|im_end|>\n"])?;
        }
        // Qwen 3: the last user message that is not a wrapped tool response.
        let last_query = messages
            .iter()
            .rposition(|m| {
                m.role == "user"
                    && !(m.content.starts_with("<tool_response>")
                        && m.content.ends_with("</tool_response>"))
            })
            .unwrap_or(messages.len().saturating_sub(1));
        for (i, m) in messages.iter().enumerate() {
            let last = i + 1 == messages.len();
            match m.role {
                "user" => w.puts(&["<|im_start|>user\n", m.content, "<|im_end|>\n"])?,
                "system" if i > 0 => {
                    w.puts(&["<|im_start|>system\n", m.content, "<|im_end|>\n"])?
                }
                "assistant" if self.family == Family::Qwen3 => {
                    let (mut content, mut reasoning) = (m.content, "");
                    if let Some(end) = m.content.find("</think>") {
                        let after = m.content.rfind("</think>").unwrap_or(end);
                        content = nl(&m.content[after + "</think>".len()..]);
                        let before = m.content[..end].trim_end_matches('\n');
                        reasoning = nl(before.rsplit("<think>").next().unwrap_or(before));
                    }
                    if i > last_query && (last || !reasoning.is_empty()) {
                        w.puts(&[
                            "<|im_start|>assistant\n<think>\n",
                            reasoning.trim_matches('\n'),
                            "\n</think>\n\n",
                            nl(content),
                        ])?;
                    } else {
                        w.puts(&["<|im_start|>assistant\n", content])?;
                    }
                    w.put("<|im_end|>\n")?;
                }
                "assistant" => w.puts(&["<|im_start|>assistant\n", m.content, "<|im_end|>\n"])?,
                "tool" => {
                    if i == 0 || messages[i - 1].role != "tool" {
                        w.put("<|im_start|>user")?;
                    }
                    w.puts(&["\n<tool_response>\n", m.content, "\n</tool_response>"])?;
                    if last || messages[i + 1].role != "tool" {
                        w.put("<|im_end|>\n")?;
                    }
                }
                // The templates write nothing for other roles (nor a first system message
                // twice).
                _ => {}
            }
        }
        Ok(())
    }
}

/// Python's `str.lstrip('\n')`.
fn nl(s: &str) -> &str {
    s.trim_start_matches('\n')
}

/// Python's `str.strip()` (Jinja's `trim`): removes whitespace as Python defines it.
pub fn py_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

struct Out<'o> {
    buf: &'o mut [u8],
    n: usize,
}

impl Out<'_> {
    fn put(&mut self, s: &str) -> Result<(), ChatError> {
        let dst = self
            .buf
            .get_mut(self.n..self.n + s.len())
            .ok_or(ChatError::BufferTooSmall)?;
        dst.copy_from_slice(s.as_bytes());
        self.n += s.len();
        Ok(())
    }

    fn puts(&mut self, parts: &[&str]) -> Result<(), ChatError> {
        parts.iter().try_for_each(|p| self.put(p))
    }

    fn ch(&mut self, c: char) -> Result<(), ChatError> {
        let mut b = [0u8; 4];
        self.put(c.encode_utf8(&mut b))
    }

    /// Python's `str.capitalize()`: first character upper-cased, the rest lower-cased.
    fn capitalized(&mut self, s: &str) -> Result<(), ChatError> {
        let mut chars = s.chars();
        if let Some(first) = chars.next() {
            for c in first.to_uppercase() {
                self.ch(c)?;
            }
        }
        for c in chars {
            for l in c.to_lowercase() {
                self.ch(l)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
    const BITNET: &str = "{% for message in messages %}{% set content = message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}";

    fn render(t: &str, m: &[Message<'_>], bos: &str) -> heapless::String<1024> {
        let t = ChatTemplate::detect(Some(t)).unwrap();
        let mut buf = [0u8; 1024];
        let s = t.render(m, true, bos, None, &mut buf).unwrap();
        let mut o = heapless::String::new();
        o.push_str(s).unwrap();
        o
    }

    fn msg<'a>(role: &'a str, content: &'a str) -> Message<'a> {
        Message { role, content }
    }

    #[test]
    fn smollm2_matches_the_golden_renderings() {
        let t = ChatTemplate::detect(Some(SMOLLM2)).unwrap();
        assert_eq!(
            t.default_system,
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        assert_eq!(
            render(SMOLLM2, &[msg("user", "What is the capital of France?")], "").as_str(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
        let conv = [
            msg("system", "You are terse."),
            msg("user", "Name a prime."),
            msg("assistant", "7"),
            msg("user", "Another?"),
        ];
        assert_eq!(
            render(SMOLLM2, &conv, "").as_str(),
            "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nName a prime.<|im_end|>\n<|im_start|>assistant\n7<|im_end|>\n<|im_start|>user\nAnother?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn llama3_and_bitnet() {
        let conv = [msg("system", " Be brief. "), msg("user", "Hi\n")];
        assert_eq!(
            render(LLAMA3, &conv, "<|begin_of_text|>").as_str(),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(
            render(BITNET, &conv, "<|begin_of_text|>").as_str(),
            "<|begin_of_text|>System: Be brief.<|eot_id|>User: Hi<|eot_id|>Assistant: "
        );
        assert_eq!(
            render(BITNET, &[msg("uSER", "x")], "").as_str(),
            "User: x<|eot_id|>Assistant: "
        );
    }

    #[test]
    fn llama31_adds_a_dated_system_block() {
        let t = "{{- bos_token }}{%- set date_string = \"26 Jul 2024\" %}{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: December 2023\\n\" }}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}";
        assert_eq!(
            render(t, &[msg("user", "Hi")], "<|begin_of_text|>").as_str(),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn unknown_templates_and_small_buffers_are_errors() {
        assert_eq!(
            ChatTemplate::detect(Some("{{ messages }}")),
            Err(ChatError::UnsupportedTemplate)
        );
        // ChatML with reasoning rules other than Qwen 3's (QwQ's opens a think block in the
        // generation prompt) is not guessed at.
        let qwq = "{{ '<|im_start|>' + message.role + '\\n' + message.content.split('</think>')[-1] + '<|im_end|>' }}{{ '<|im_start|>assistant\\n<think>\\n' }}";
        assert_eq!(
            ChatTemplate::detect(Some(qwq)),
            Err(ChatError::UnsupportedTemplate)
        );
        let t = ChatTemplate::detect(None).unwrap();
        let mut buf = [0u8; 10];
        assert_eq!(
            t.render(&[msg("user", "hello")], true, "", None, &mut buf),
            Err(ChatError::BufferTooSmall)
        );
    }
}
