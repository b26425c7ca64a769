//! The detection engine: finds every enabled entity in a text, fast enough for the hot path.
//!
//! Everything is compiled once, at start. One keyword pass (ASCII case-insensitive, filtered on
//! each position's first three bytes: [`crate::keywords`]) over every rule's keywords, the
//! context words of the rules that need a boost and every directory name says which keyword
//! rules can match at all and where the context words are; one byte pass finds the number
//! shapes (digit runs, dotted and colon chains, a number before a capital) that say where the
//! numeric rules can match. Each regex then runs only where a match can be: anchored at a
//! token's fixed prefix (`ghp_`, `AKIA`, `password`), at each `@` or `://`, at the starts near a
//! digit run, or searched within the windows around a chain or a context word. Only custom
//! patterns (and context-gated rules under a threshold so low they need no context word) are
//! searched over the whole text, once their keywords are seen. The tests hold all this to a
//! reference that searches every text whole. Candidates are confirmed
//! (checksums, ranges, surroundings), scored (base score, plus a boost when a context word is
//! near, as Presidio does), filtered by the allow-list, and overlaps resolved.
//!
//! A large rule set run naively through the regex crate falls to a few MB/s; the prefilter and
//! a raised lazy-DFA cache keep it in the hundreds (see `benches/redaction.rs`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use regex::Regex;

use crate::config::{Config, CustomPattern, MAX_RULES};
use crate::detectors::{
    builtin_rules, byte_at, byte_before, confirm_standalone, email, is_word, may_start_number,
    secrets::scheme_start, Confirm, EntityType, Span, StartTest, Trigger, CONTEXT_BOOST,
};
use crate::keywords::Keywords;

/// Why a redactor cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedactorError {
    #[error("unknown entity type `{0}`")]
    UnknownType(String),
    #[error("pattern for {kind} does not compile: {message}")]
    Pattern { kind: String, message: String },
    #[error("too many rules ({0}; at most {MAX_RULES})")]
    TooManyRules(usize),
    #[error("keyword automaton: {0}")]
    Keywords(String),
}

/// Counts of found entities by type name.
pub type Counts = BTreeMap<&'static str, u32>;

/// How far before (and after) a candidate a context word counts, in bytes.
const CONTEXT_BEFORE: usize = 48;
const CONTEXT_AFTER: usize = 24;
/// The longest match of a keyword rule that needs a context word to pass (an AWS secret key,
/// 40 bytes; a date of birth or an SSN, under 25): how far past the context distances the
/// windows of [`Engine::scan_near_context`] reach.
const CONTEXT_MATCH_MAX: usize = 64;
/// The lazy DFA's cache per regex: the default (2 MiB) thrashes on the wider patterns.
const DFA_CACHE: usize = 16 << 20;
/// The largest compiled program a pattern may make.
const NFA_LIMIT: usize = 32 << 20;

/// One compiled rule.
#[derive(Debug, Clone)]
struct Rule {
    kind: EntityType,
    re: Regex,
    /// For a [`Trigger::Prefixes`], [`Trigger::Digits`] or [`Trigger::AtSign`] rule, the regex
    /// anchored at the start of its haystack, tried only where a match may begin (a prefix
    /// keyword, a start passing the rule's test near a digit run, an `@`'s local part): no scan
    /// of the text, no reverse search for the start of a match.
    anchored: Option<Regex>,
    /// A keyword rule that cannot pass without a context word's boost (dates of birth, bare
    /// SSNs, AWS secret keys): its regex runs only within reach of its context words.
    near_context_only: bool,
    trigger: Option<Trigger>,
    confirm: Confirm,
    base: f32,
}

/// What one keyword of the automaton means.
#[derive(Debug, Clone, Default)]
struct Keyword {
    /// Rules this keyword switches on.
    triggers: u128,
    /// Rules whose matches begin where this keyword does.
    anchors: u128,
    /// Rules this keyword is a context word for.
    context_of: u128,
    /// A directory name: the exact spelling to confirm (the automaton ignores case).
    person: Option<Box<str>>,
}

/// The number shapes in a text that gate the numeric rules.
#[derive(Debug, Clone, Default)]
struct Shapes {
    /// Chains of at least three `digit.digit` joints, each at most four bytes from the last (a
    /// dotted quad has three): (first joint, last joint). The IPv4 rule searches only these.
    dotted: Vec<(usize, usize)>,
    /// Chains of at least five `hex:hex` or `hex-hex` joints, each at most five bytes from the
    /// last: (first joint, last joint). A MAC address has five, three bytes apart; a UUID four,
    /// a timestamp two.
    hex_chains: Vec<(usize, usize)>,
    /// Chains of colons at most five bytes apart that hold a `::` or at least six `hex:hex`
    /// joints: (first colon, last colon). Every IPv6 address lies in one (it is compressed, or
    /// has seven colons, or six before an embedded IPv4 address, every one of them a joint), so
    /// the IPv6 rule searches only these; a MAC address's chain (five joints) and a
    /// timestamp's (two) are never searched.
    colon_chains: Vec<(usize, usize)>,
    /// Where a group of digits followed by at most one letter, a space and a capital letter
    /// begins (`221B Baker`, `1600 Pennsylvania`): the only places a street address can start.
    number_then_capital: Vec<usize>,
    /// Runs of at least [`CLUSTER_MIN`] digits: (first digit, end of last digit, digits).
    /// The `Digits` rules search only around these.
    clusters: Vec<(usize, usize, u32)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The buffers one [`Engine::find`] fills, kept per thread from call to call: allocating and
/// growing them afresh for every text was a tenth of the time spent on it.
#[derive(Debug, Default)]
struct Scratch {
    /// Confirmed candidates, with their rule's place (0 for a directory name).
    found: Vec<(Span, usize)>,
    /// Context word hits: (start, end, rules they speak for).
    context: Vec<(usize, usize, u128)>,
    /// Where a prefix keyword starts: (start, rules anchored there).
    anchors: Vec<(usize, u128)>,
    shapes: Shapes,
    /// Where a number may start near a digit run ([`number_starts_in`]).
    number_starts: Vec<usize>,
}

impl Scratch {
    /// The most entries a buffer keeps between calls: one huge text must not pin its memory
    /// in every worker thread for good.
    const KEEP: usize = 1024;

    fn trim(&mut self) {
        fn cap<T>(v: &mut Vec<T>) {
            if v.capacity() > Scratch::KEEP {
                *v = Vec::new();
            }
        }
        cap(&mut self.found);
        cap(&mut self.context);
        cap(&mut self.anchors);
        cap(&mut self.number_starts);
        let shapes = &mut self.shapes;
        cap(&mut shapes.dotted);
        cap(&mut shapes.hex_chains);
        cap(&mut shapes.colon_chains);
        cap(&mut shapes.number_then_capital);
        cap(&mut shapes.clusters);
    }
}

/// Which rules may match given the shapes in a text, so that [`Engine::find`] visits only those
/// (most texts have none of the shapes and only a few keywords: a pass over every rule, asking
/// each, was a tenth of the time spent on short texts).
#[derive(Debug, Clone, Default)]
struct ShapeGates {
    /// Rules tried on every text: they find their own starts (`@`, `://`), or a custom pattern
    /// without keywords.
    always: u128,
    dotted: u128,
    hex_chains: u128,
    colon_chains: u128,
    number_then_capital: u128,
    /// A `Digits` rule and the digit run it needs.
    digits: Vec<(u32, u128)>,
}

impl ShapeGates {
    fn add(&mut self, trigger: Option<Trigger>, keyword_gated: bool, bit: u128) {
        match trigger {
            None | Some(Trigger::Keywords(_)) if keyword_gated => {}
            Some(Trigger::Prefixes(_) | Trigger::PrefixesWhere(..)) => {}
            Some(Trigger::DottedDigits) => self.dotted |= bit,
            Some(Trigger::MacSeparators) => self.hex_chains |= bit,
            Some(Trigger::Ipv6Colons) => self.colon_chains |= bit,
            Some(Trigger::NumberThenCapital) => self.number_then_capital |= bit,
            Some(Trigger::Digits(n, _)) => self.digits.push((n, bit)),
            None | Some(Trigger::Keywords(_) | Trigger::AtSign | Trigger::SchemeSeparator) => {
                self.always |= bit
            }
        }
    }

    /// The rules the shapes of a text switch on, with those that always run.
    fn due(&self, shapes: &Shapes) -> u128 {
        let mut due = self.always;
        let mut gate = |present: bool, rules: u128| {
            if present {
                due |= rules;
            }
        };
        gate(!shapes.dotted.is_empty(), self.dotted);
        gate(!shapes.hex_chains.is_empty(), self.hex_chains);
        gate(!shapes.colon_chains.is_empty(), self.colon_chains);
        gate(
            !shapes.number_then_capital.is_empty(),
            self.number_then_capital,
        );
        let longest = shapes.clusters.iter().map(|c| c.2).max().unwrap_or(0);
        for &(n, rules) in &self.digits {
            gate(longest >= n, rules);
        }
        due
    }
}

/// The shortest digit run any `Digits` rule asks for (phone numbers, SSNs).
const CLUSTER_MIN: u32 = 9;
/// How far around a digit run a `Digits` rule searches: an IBAN's country code and letters
/// before its digits, a `+` or bracket before a phone number.
const WINDOW_BEFORE: usize = 12;
const WINDOW_AFTER: usize = 6;

/// Detection for one tenant: built-in rules, the deployment's and the tenant's own patterns,
/// names and allow-list.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: Vec<Rule>,
    keywords: Keywords,
    roles: Vec<Keyword>,
    /// Rules switched on by a keyword (the others are gated by shapes or always run).
    keyword_gated: u128,
    /// Which rules each number shape switches on, and the rules that run on every text.
    gates: ShapeGates,
    allow: HashSet<String>,
    threshold: f32,
    kinds: Vec<EntityType>,
    /// Finds each `://` for [`Engine::scan_schemes`]; built once (a searcher's setup costs
    /// more than searching a short text).
    scheme_separator: memchr::memmem::Finder<'static>,
}

/// Interns a custom entity name so that spans and counts can carry it as `&'static str`.
/// Names come from configuration, once per process, so the set is small and bounded.
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

fn compile(kind: &str, pattern: &str) -> Result<Regex, RedactorError> {
    regex::RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(NFA_LIMIT)
        .dfa_size_limit(DFA_CACHE)
        .build()
        .map_err(|e| RedactorError::Pattern {
            kind: kind.to_string(),
            message: e.to_string(),
        })
}

/// Everything an engine is built from.
pub struct EngineSpec<'a> {
    pub kinds: &'a [EntityType],
    pub patterns: Vec<&'a CustomPattern>,
    pub names: Vec<&'a str>,
    pub allow: Vec<&'a str>,
    pub threshold: f32,
}

impl Engine {
    /// An engine for exactly these built-in types, nothing configured.
    pub fn builtin(kinds: &[EntityType]) -> Result<Engine, RedactorError> {
        Engine::build(&EngineSpec {
            kinds,
            patterns: Vec::new(),
            names: Vec::new(),
            allow: Vec::new(),
            threshold: 0.5,
        })
    }

    pub fn build(spec: &EngineSpec<'_>) -> Result<Engine, RedactorError> {
        let mut rules = Vec::new();
        // Keyword text (lower-cased) → its role; the order of first sight is the pattern id.
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut words: Vec<String> = Vec::new();
        let mut roles: Vec<Keyword> = Vec::new();
        let mut role = |word: &str, words: &mut Vec<String>, roles: &mut Vec<Keyword>| {
            let lower = word.to_ascii_lowercase();
            *index.entry(lower.clone()).or_insert_with(|| {
                words.push(lower);
                roles.push(Keyword::default());
                roles.len() - 1
            })
        };
        let mut keyword_gated = 0u128;
        for r in builtin_rules()
            .into_iter()
            .filter(|r| spec.kinds.contains(&r.kind))
        {
            let bit = 1u128 << rules.len().min(127);
            let mut anchored = None;
            let near_context_only = matches!(r.trigger, Trigger::Keywords(_))
                && r.base + 1e-4 < spec.threshold
                && !r.context.is_empty();
            let trigger = match r.trigger {
                Trigger::Keywords(ks) => {
                    for k in ks {
                        let i = role(k, &mut words, &mut roles);
                        roles[i].triggers |= bit;
                    }
                    keyword_gated |= bit;
                    None
                }
                Trigger::Prefixes(ks) | Trigger::PrefixesWhere(ks, _) => {
                    for k in ks {
                        let i = role(k, &mut words, &mut roles);
                        roles[i].triggers |= bit;
                        roles[i].anchors |= bit;
                    }
                    keyword_gated |= bit;
                    let pattern = format!(r"\A(?:{})", r.pattern);
                    anchored = Some(compile(r.kind.as_str(), &pattern)?);
                    Some(r.trigger)
                }
                Trigger::Digits(..)
                | Trigger::AtSign
                | Trigger::NumberThenCapital
                | Trigger::SchemeSeparator => {
                    let pattern = format!(r"\A(?:{})", r.pattern);
                    anchored = Some(compile(r.kind.as_str(), &pattern)?);
                    Some(r.trigger)
                }
                other => Some(other),
            };
            // A context word only matters to a rule that needs its boost to pass; the others'
            // words would only slow the keyword pass down.
            if r.base + 1e-4 < spec.threshold {
                for c in r.context {
                    let i = role(c, &mut words, &mut roles);
                    roles[i].context_of |= bit;
                }
            }
            rules.push(Rule {
                kind: r.kind,
                re: compile(r.kind.as_str(), r.pattern)?,
                anchored,
                near_context_only,
                trigger,
                confirm: r.confirm,
                base: r.base,
            });
        }
        for p in &spec.patterns {
            let bit = 1u128 << rules.len().min(127);
            if !p.keywords.is_empty() {
                for k in &p.keywords {
                    let i = role(k, &mut words, &mut roles);
                    roles[i].triggers |= bit;
                }
                keyword_gated |= bit;
            }
            rules.push(Rule {
                kind: EntityType::Custom(intern(&p.name)),
                re: compile(&p.name, &p.regex)?,
                anchored: None,
                near_context_only: false,
                trigger: None,
                confirm: confirm_standalone,
                base: 1.0,
            });
        }
        if rules.len() > MAX_RULES {
            return Err(RedactorError::TooManyRules(rules.len()));
        }
        let mut gates = ShapeGates::default();
        for (i, rule) in rules.iter().enumerate() {
            let bit = 1u128 << i.min(127);
            gates.add(rule.trigger, keyword_gated & bit != 0, bit);
        }
        if spec.kinds.contains(&EntityType::Person) {
            for name in spec.names.iter().map(|n| n.trim()).filter(|n| n.len() >= 3) {
                let i = role(name, &mut words, &mut roles);
                roles[i].person = Some(name.into());
            }
        }
        let keywords = Keywords::new(&words).map_err(|e| RedactorError::Keywords(e.to_string()))?;
        let mut kinds: Vec<EntityType> = rules.iter().map(|r| r.kind).collect();
        if spec.kinds.contains(&EntityType::Person) {
            kinds.push(EntityType::Person);
        }
        kinds.sort();
        kinds.dedup();
        Ok(Engine {
            rules,
            keywords,
            roles,
            keyword_gated,
            gates,
            allow: spec.allow.iter().map(|s| s.to_string()).collect(),
            threshold: spec.threshold,
            kinds,
            scheme_separator: memchr::memmem::Finder::new(b"://").into_owned(),
        })
    }

    /// The types this engine finds.
    pub fn types(&self) -> impl Iterator<Item = EntityType> + '_ {
        self.kinds.iter().copied()
    }

    /// The entities in `text`, in text order, without overlaps: where candidates overlap, the
    /// earliest wins, then the longest, then the more specific rule (the earlier one).
    pub fn find(&self, text: &str) -> Vec<Span> {
        if text.is_empty() {
            return Vec::new();
        }
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                let spans = self.find_with(text, &mut scratch);
                scratch.trim();
                spans
            }
            // Not reentrant, but a fresh set of buffers is always correct.
            Err(_) => self.find_with(text, &mut Scratch::default()),
        })
    }

    fn find_with(&self, text: &str, scratch: &mut Scratch) -> Vec<Span> {
        let Scratch {
            found,
            context,
            anchors,
            shapes: text_shapes,
            number_starts,
        } = scratch;
        let mut numbers_found = false;
        found.clear();
        context.clear();
        anchors.clear();
        let mut active = 0u128;
        // Overlapping, so that no prefix keyword is hidden inside another keyword's match
        // (`aws_secret` holds `secret`).
        self.keywords.for_each(text, |s, e, id| {
            let role = &self.roles[id];
            active |= role.triggers;
            if role.context_of != 0 {
                context.push((s, e, role.context_of));
            }
            if role.anchors != 0 {
                anchors.push((s, role.anchors));
            }
            if let Some(name) = &role.person {
                if text[s..e] == **name
                    && !byte_before(text, s).is_some_and(is_word)
                    && !byte_at(text, e).is_some_and(is_word)
                {
                    found.push((
                        Span {
                            start: s,
                            end: e,
                            kind: EntityType::Person,
                        },
                        0,
                    ));
                }
            }
        });
        // The short keywords come after the long ones; anchored scans and the windows around
        // context words want them by start.
        anchors.sort_unstable_by_key(|&(start, _)| start);
        context.sort_unstable_by_key(|&(start, _, _)| start);
        shapes(text, text_shapes);
        let shapes = &*text_shapes;
        // Only the rules a keyword or a shape switched on, in order.
        let mut due = (active & self.keyword_gated) | self.gates.due(shapes);
        while due != 0 {
            let i = due.trailing_zeros() as usize;
            let bit = 1u128 << i;
            due &= !bit;
            let rule = &self.rules[i];
            let on = match rule.trigger {
                // `due` holds a keyword-gated rule only when a keyword switched it on.
                None if rule.near_context_only => {
                    self.scan_near_context(i, rule, text, context, found);
                    false
                }
                None => true,
                Some(Trigger::AtSign) => {
                    self.scan_at_signs(i, rule, text, context, found);
                    false
                }
                Some(Trigger::Digits(n, starts)) => {
                    // The offsets near any digit run where a number may start, found once for
                    // all the numeric rules.
                    if !numbers_found {
                        number_starts_in(text, cluster_windows(shapes, 0), number_starts);
                        numbers_found = true;
                    }
                    // Only around the digit runs long enough for this rule.
                    for_merged(text, cluster_windows(shapes, n), |f, t| {
                        self.scan_starts(i, rule, starts, text, f, t, number_starts, context, found)
                    });
                    false
                }
                Some(Trigger::DottedDigits) => {
                    // Every dotted quad lies within its chain of joints, with one to three
                    // digits either side.
                    let windows = shapes
                        .dotted
                        .iter()
                        .map(|&(first, last)| (first.saturating_sub(4), last + 5));
                    self.scan_windows(i, rule, text, windows, context, found);
                    false
                }
                Some(Trigger::NumberThenCapital) => {
                    let starts = shapes.number_then_capital.iter().copied();
                    self.scan_anchored(i, rule, text, starts, context, found);
                    false
                }
                Some(Trigger::Ipv6Colons) => {
                    // A group (four hex digits) before the first colon, a group and an embedded
                    // IPv4 address (`.1.2.3`, twelve bytes) after the last.
                    let windows = shapes
                        .colon_chains
                        .iter()
                        .map(|&(first, last)| (first.saturating_sub(4), last + 17));
                    self.scan_windows(i, rule, text, windows, context, found);
                    false
                }
                Some(Trigger::MacSeparators) => {
                    // Two hex digits either side of the chain.
                    let windows = shapes
                        .hex_chains
                        .iter()
                        .map(|&(first, last)| (first.saturating_sub(2), last + 3));
                    self.scan_windows(i, rule, text, windows, context, found);
                    false
                }
                Some(Trigger::SchemeSeparator) => {
                    self.scan_schemes(i, rule, text, context, found);
                    false
                }
                Some(trigger @ (Trigger::Prefixes(_) | Trigger::PrefixesWhere(..))) => {
                    let test = match trigger {
                        Trigger::PrefixesWhere(_, test) => Some(test),
                        _ => None,
                    };
                    let starts = anchors
                        .iter()
                        .filter(|a| a.1 & bit != 0 && test.is_none_or(|t| t(text, a.0)))
                        .map(|a| a.0);
                    self.scan_anchored(i, rule, text, starts, context, found);
                    false
                }
                Some(Trigger::Keywords(_)) => true,
            };
            if on {
                self.scan(i, rule, text, 0, text.len(), context, found);
            }
        }
        if found.is_empty() {
            return Vec::new();
        }
        resolve_overlaps(found);
        found.iter().map(|&(s, _)| s).collect()
    }

    /// Tries a rule's anchored regex at each place a match may start (in text order, on char
    /// boundaries): where one of a [`Trigger::Prefixes`] rule's keywords starts, or where a
    /// [`Trigger::NumberThenCapital`] number does. After a confirmed match, starts inside it
    /// are skipped, as a scan would.
    fn scan_anchored(
        &self,
        i: usize,
        rule: &Rule,
        text: &str,
        starts: impl Iterator<Item = usize>,
        context: &[(usize, usize, u128)],
        out: &mut Vec<(Span, usize)>,
    ) {
        let Some(re) = &rule.anchored else {
            return;
        };
        let mut next = 0;
        for at in starts {
            if at < next {
                continue;
            }
            next = at + 1;
            let Some(m) = re.find(&text[at..]) else {
                continue;
            };
            if let Some((start, end)) = (rule.confirm)(text, at, at + m.end()) {
                if start < end {
                    self.keep(i, rule, text, start, end, context, out);
                    next = next.max(end);
                }
            }
        }
    }

    /// Tries a [`Trigger::Digits`] rule's anchored regex at each offset of `text[from..to]` that
    /// passes its start test, matching within `text[..to]`. The same candidates as a scan of
    /// the window: a scan's leftmost match starting at an offset is the anchored match there,
    /// and a start failing the test is one its confirmation would refuse (the scan would move
    /// on by one byte). Only the offsets in `number_starts` (ascending; every offset of the
    /// window where [`may_start_number`] holds, see [`number_starts_in`]) are asked: no start
    /// test passes elsewhere.
    #[allow(clippy::too_many_arguments)]
    fn scan_starts(
        &self,
        i: usize,
        rule: &Rule,
        starts: StartTest,
        text: &str,
        from: usize,
        to: usize,
        number_starts: &[usize],
        context: &[(usize, usize, u128)],
        out: &mut Vec<(Span, usize)>,
    ) {
        let Some(re) = &rule.anchored else {
            return;
        };
        let first = number_starts.partition_point(|&at| at < from);
        // Where a scan would resume: after a confirmed match, not inside it.
        let mut next = from;
        for &at in &number_starts[first..] {
            if at >= to {
                break;
            }
            // Every start test requires an ASCII byte, so `at` is a char boundary when it passes.
            if at < next || !starts(text, at) {
                continue;
            }
            next = match re.find(&text[at..to]) {
                Some(m) => match (rule.confirm)(text, at, at + m.end()) {
                    Some((start, end)) if start < end => {
                        self.keep(i, rule, text, start, end, context, out);
                        end.max(at + 1)
                    }
                    _ => at + 1,
                },
                None => at + 1,
            };
        }
    }

    /// Tries the [`Trigger::AtSign`] rule's anchored regex once per `@`, from the start of the
    /// local part before it. The same candidates as a scan of the text: the scan's leftmost
    /// match through an `@` starts there, and a later start through the same `@` is confirmed
    /// from the same local part (confirmation extends a match back to its start), so refused
    /// the same.
    fn scan_at_signs(
        &self,
        i: usize,
        rule: &Rule,
        text: &str,
        context: &[(usize, usize, u128)],
        out: &mut Vec<(Span, usize)>,
    ) {
        let at_signs = memchr::memchr_iter(b'@', text.as_bytes());
        let local_part =
            |next, at| Some(email::local_part_start(text, next, at)).filter(|&s| s < at);
        self.scan_from_separators(i, rule, text, at_signs, local_part, context, out);
    }

    /// Tries the [`Trigger::SchemeSeparator`] rule's anchored regex once per `://`, from the
    /// start of the scheme before it. The same candidates as a scan: the tail after the `://`
    /// does not depend on where the scheme starts, and neither does the confirmation (it reports
    /// the credentials after the `://`), so the leftmost start decides for all.
    fn scan_schemes(
        &self,
        i: usize,
        rule: &Rule,
        text: &str,
        context: &[(usize, usize, u128)],
        out: &mut Vec<(Span, usize)>,
    ) {
        let separators = self.scheme_separator.find_iter(text.as_bytes());
        let scheme = |next, separator| scheme_start(text, next, separator);
        self.scan_from_separators(i, rule, text, separators, scheme, context, out);
    }

    /// Tries a rule's anchored regex once per separator (in text order), from where
    /// `start(next, separator)` says a match through it begins, not before `next`, the end of
    /// the last confirmed match (where a scan would resume).
    #[allow(clippy::too_many_arguments)]
    fn scan_from_separators(
        &self,
        i: usize,
        rule: &Rule,
        text: &str,
        separators: impl Iterator<Item = usize>,
        start: impl Fn(usize, usize) -> Option<usize>,
        context: &[(usize, usize, u128)],
        out: &mut Vec<(Span, usize)>,
    ) {
        let Some(re) = &rule.anchored else {
            return;
        };
        let mut next = 0;
        for separator in separators {
            if separator < next {
                continue;
            }
            let Some(start) = start(next, separator) else {
                continue;
            };
            let Some(m) = re.find(&text[start..]) else {
                continue;
            };
            if let Some((s, e)) = (rule.confirm)(text, start, start + m.end()) {
                if s < e {
                    self.keep(i, rule, text, s, e, context, out);
                    next = e.max(start + 1);
                }
            }
        }
    }

    /// Runs a [`Rule::near_context_only`] rule's regex only in windows around its context words:
    /// a candidate further away can never reach the threshold. The windows reach
    /// [`CONTEXT_MATCH_MAX`] beyond the context distances, so every candidate that could be
    /// boosted lies wholly inside one.
    fn scan_near_context(
        &self,
        i: usize,
        rule: &Rule,
        text: &str,
        context: &[(usize, usize, u128)],
        out: &mut Vec<(Span, usize)>,
    ) {
        let bit = 1u128 << i.min(127);
        let windows = context.iter().filter(|c| c.2 & bit != 0).map(|&(s, e, _)| {
            (
                s.saturating_sub(CONTEXT_AFTER + CONTEXT_MATCH_MAX),
                e + CONTEXT_BEFORE + CONTEXT_MATCH_MAX,
            )
        });
        for_merged(text, windows, |f, t| {
            self.scan(i, rule, text, f, t, context, out)
        });
    }

    /// Scores a confirmed candidate and keeps it when it reaches the threshold and is not
    /// allow-listed.
    #[allow(clippy::too_many_arguments)]
    fn keep(
        &self,
        i: usize,
        rule: &Rule,
        text: &str,
        start: usize,
        end: usize,
        context: &[(usize, usize, u128)],
        out: &mut Vec<(Span, usize)>,
    ) {
        let bit = 1u128 << i.min(127);
        let mut score = rule.base;
        if score < self.threshold && near_context(text, context, bit, start, end) {
            score += CONTEXT_BOOST;
        }
        if score + 1e-4 >= self.threshold && !self.allow.contains(&text[start..end]) {
            out.push((
                Span {
                    start,
                    end,
                    kind: rule.kind,
                },
                i + 1,
            ));
        }
    }

    /// Runs one rule's regex over windows of the text (in order of their start; overlapping
    /// ones merged; widened to char boundaries and cut at the end of the text).
    fn scan_windows(
        &self,
        i: usize,
        rule: &Rule,
        text: &str,
        windows: impl Iterator<Item = (usize, usize)>,
        context: &[(usize, usize, u128)],
        out: &mut Vec<(Span, usize)>,
    ) {
        for_merged(text, windows, |f, t| {
            self.scan(i, rule, text, f, t, context, out)
        });
    }

    /// Runs one rule's regex over `text[from..to]` (confirming against the whole text). A
    /// rejected candidate only moves the search on by one character, so a near-miss right
    /// before a real entity cannot hide it.
    #[allow(clippy::too_many_arguments)]
    fn scan(
        &self,
        i: usize,
        rule: &Rule,
        text: &str,
        from: usize,
        to: usize,
        context: &[(usize, usize, u128)],
        out: &mut Vec<(Span, usize)>,
    ) {
        let haystack = &text[..to];
        let mut pos = from;
        while pos <= to {
            let Some(m) = rule.re.find_at(haystack, pos) else {
                return;
            };
            pos = match (rule.confirm)(text, m.start(), m.end()) {
                Some((start, end)) if start < end => {
                    self.keep(i, rule, text, start, end, context, out);
                    end.max(m.start() + 1)
                }
                _ => m.start() + 1,
            };
            while pos < to && !text.is_char_boundary(pos) {
                pos += 1;
            }
        }
    }
}

/// The windows around the digit runs of at least `digits` digits that a [`Trigger::Digits`]
/// rule searches ([`WINDOW_BEFORE`], [`WINDOW_AFTER`]).
fn cluster_windows(shapes: &Shapes, digits: u32) -> impl Iterator<Item = (usize, usize)> + '_ {
    shapes
        .clusters
        .iter()
        .filter(move |c| c.2 >= digits)
        .map(|&(start, end, _)| (start.saturating_sub(WINDOW_BEFORE), end + WINDOW_AFTER))
}

/// Fills `out` with every offset of the (merged) `windows` where [`may_start_number`] holds,
/// in ascending order: the only offsets a numeric rule's start test can pass.
fn number_starts_in(
    text: &str,
    windows: impl Iterator<Item = (usize, usize)>,
    out: &mut Vec<usize>,
) {
    out.clear();
    let bytes = text.as_bytes();
    for_merged(text, windows, |from, to| {
        out.extend((from..to).filter(|&at| may_start_number(bytes, at)));
    });
}

/// Calls `each(from, to)` for the union of `windows` (given in order of their start), each
/// piece widened to char boundaries and cut at the end of the text.
fn for_merged(
    text: &str,
    windows: impl Iterator<Item = (usize, usize)>,
    mut each: impl FnMut(usize, usize),
) {
    let mut window: Option<(usize, usize)> = None;
    for (from, to) in windows {
        let (from, to) = (floor_boundary(text, from), ceil_boundary(text, to));
        match window {
            Some((f, t)) if from <= t => window = Some((f, t.max(to))),
            Some((f, t)) => {
                each(f, t);
                window = Some((from, to));
            }
            None => window = Some((from, to)),
        }
    }
    if let Some((f, t)) = window {
        each(f, t);
    }
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while at < text.len() && !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// Whether a context word for the rule `bit` ends shortly before `start` or begins shortly
/// after `end`.
/// A context word only speaks for the nearest number: with another digit in between
/// (`DOB: 1985-03-12, joined 2019-01-02`) it speaks for that one instead.
fn near_context(
    text: &str,
    context: &[(usize, usize, u128)],
    bit: u128,
    start: usize,
    end: usize,
) -> bool {
    let clear = |a: usize, b: usize| !text.as_bytes()[a..b].iter().any(u8::is_ascii_digit);
    context.iter().any(|&(s, e, rules)| {
        rules & bit != 0
            && ((e <= start && start - e <= CONTEXT_BEFORE && clear(e, start))
                || (s >= end && s - end <= CONTEXT_AFTER && clear(end, s))
                || (s <= start && e >= start))
    })
}

/// Byte classes for the shape pass.
const OTHER: u8 = 0;
const DIGIT: u8 = 1;
const SEP: u8 = 2;
const COLON: u8 = 3;
const DASH: u8 = 4;
const DOT: u8 = 5;

const CLASSES: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut b = b'0';
    while b <= b'9' {
        t[b as usize] = DIGIT;
        b += 1;
    }
    t[b' ' as usize] = SEP;
    t[b'/' as usize] = SEP;
    t[b'(' as usize] = SEP;
    t[b')' as usize] = SEP;
    t[b'+' as usize] = SEP;
    t[b'-' as usize] = DASH;
    t[b'.' as usize] = DOT;
    t[b':' as usize] = COLON;
    t
};

/// Chains of separator joints (`1.2`, `ab:cd`), each at most `max_gap` bytes from the last;
/// those of at least `min` joints are kept as (first joint, last joint).
struct Chain {
    max_gap: usize,
    min: u32,
    /// Where the current streak's first joint is.
    first: usize,
    last: usize,
    streak: u32,
    kept: Vec<(usize, usize)>,
}

impl Chain {
    /// A chain that keeps what it finds in `kept` (emptied first: a buffer reused across calls).
    fn new(max_gap: usize, min: u32, mut kept: Vec<(usize, usize)>) -> Chain {
        kept.clear();
        Chain {
            max_gap,
            min,
            first: 0,
            last: 0,
            streak: 0,
            kept,
        }
    }

    fn joint(&mut self, at: usize) {
        if self.streak > 0 && at - self.last <= self.max_gap {
            self.streak += 1;
        } else {
            self.streak = 1;
            self.first = at;
        }
        self.last = at;
        if self.streak == self.min {
            self.kept.push((self.first, at));
        } else if let Some(chain) = self.kept.last_mut().filter(|_| self.streak > self.min) {
            chain.1 = at;
        }
    }
}

/// One pass over the bytes: runs of digits joined by at most two separators at a time
/// (` -./()+`), and chains of `digit.digit`, `hex:hex` and `hex-hex` joints. Outside a digit
/// run (most bytes) it jumps from one digit, `:` or `-` to the next, eight bytes at a time.
///
/// Fills `out`, whose buffers are reused from call to call.
fn shapes(text: &str, out: &mut Shapes) {
    let bytes = text.as_bytes();
    let hex_at = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_hexdigit);
    // A dotted quad has three joints at most four bytes apart; a MAC five, three apart.
    let (mut dots, mut hex) = (
        Chain::new(4, 3, std::mem::take(&mut out.dotted)),
        Chain::new(5, 5, std::mem::take(&mut out.hex_chains)),
    );
    // The colon chain being built: (first colon, last colon, holds `::`, hex joints).
    let mut chain: Option<(usize, usize, bool, u32)> = None;
    let mut colon_chains = std::mem::take(&mut out.colon_chains);
    colon_chains.clear();
    let close = |chain: Option<(usize, usize, bool, u32)>, chains: &mut Vec<(usize, usize)>| {
        if let Some((first, last, double, joints)) = chain {
            if double || joints >= 6 {
                chains.push((first, last));
            }
        }
    };
    let (mut number_then_capital, mut clusters) = (
        std::mem::take(&mut out.number_then_capital),
        std::mem::take(&mut out.clusters),
    );
    number_then_capital.clear();
    clusters.clear();
    // The digit run (digits joined by up to two separators), and the group of adjacent digits
    // it ends with.
    let (mut run, mut sep, mut run_start, mut run_end, mut group_start) = (0u32, 0u32, 0, 0, 0);
    let mut separator = |i: usize, b: u8, chain: &mut Option<(usize, usize, bool, u32)>| {
        if b == b':' {
            let joint = i > 0 && hex_at(i - 1) && hex_at(i + 1);
            if joint {
                hex.joint(i);
            }
            let double = i > 0 && bytes[i - 1] == b':';
            match chain {
                Some((_, last, d, joints)) if i - *last <= 5 => {
                    *last = i;
                    *d |= double;
                    *joints += u32::from(joint);
                }
                _ => {
                    close(chain.take(), &mut colon_chains);
                    *chain = Some((i, i, false, u32::from(joint)));
                }
            }
        } else if i > 0 && hex_at(i - 1) && hex_at(i + 1) {
            hex.joint(i);
        }
    };
    let capital_at = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_uppercase);
    let mut next = 0;
    while next < bytes.len() {
        if run == 0 {
            // Outside a digit run only digits, `:` and `-` matter: jump to the next one.
            next = next_shape_byte(bytes, next);
            if next == bytes.len() {
                break;
            }
        }
        let (i, b) = (next, bytes[next]);
        next += 1;
        let class = CLASSES[usize::from(b)];
        if run == 0 && class != DIGIT {
            // A `:` or `-`: the jump above skips every other byte.
            separator(i, b, &mut chain);
            continue;
        }
        match class {
            DIGIT => {
                if run == 0 {
                    run_start = i;
                }
                if run == 0 || sep > 0 {
                    group_start = i;
                }
                // The rest of this group of digits at once: nothing but the counts changes
                // within it.
                let end = i
                    + 1
                    + bytes[i + 1..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                run += (end - i) as u32;
                run_end = end;
                next = end;
                sep = 0;
            }
            SEP | DASH | DOT => {
                sep += 1;
                if class == DASH {
                    separator(i, b, &mut chain);
                } else if class == DOT
                    && bytes[i - 1].is_ascii_digit()
                    && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
                {
                    dots.joint(i);
                }
                if b == b' ' && sep == 1 && capital_at(i + 1) {
                    number_then_capital.push(group_start);
                }
                if sep > 2 {
                    if run >= CLUSTER_MIN {
                        clusters.push((run_start, run_end, run));
                    }
                    run = 0;
                }
            }
            _ => {
                if class == COLON {
                    separator(i, b, &mut chain);
                } else if sep == 0
                    && b.is_ascii_alphabetic()
                    && bytes.get(i + 1) == Some(&b' ')
                    && capital_at(i + 2)
                {
                    number_then_capital.push(group_start);
                }
                if run >= CLUSTER_MIN {
                    clusters.push((run_start, run_end, run));
                }
                run = 0;
                sep = 0;
            }
        }
    }
    if run >= CLUSTER_MIN {
        clusters.push((run_start, run_end, run));
    }
    close(chain, &mut colon_chains);
    *out = Shapes {
        dotted: dots.kept,
        hex_chains: hex.kept,
        colon_chains,
        number_then_capital,
        clusters,
    };
}

/// Whether a byte can start or extend a shape outside a digit run: a digit, `:` or `-`.
fn is_shape_byte(b: u8) -> bool {
    matches!(CLASSES[usize::from(b)], DIGIT | COLON | DASH)
}

/// The position of the first [shape byte](is_shape_byte) at or after `from`, or the text's
/// length. Most bytes of prose are none, so it tests eight at a time: within each byte, with
/// its top bit cleared, adding a constant sets the top bit exactly when the byte is at or above
/// a bound, and no sum carries into the next byte; bytes of 0x80 and above (UTF-8) never match.
fn next_shape_byte(bytes: &[u8], mut from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    while let Some(Ok(word)) = bytes.get(from..from + 8).map(<[u8; 8]>::try_from) {
        let word = u64::from_le_bytes(word);
        let low = word & !TOPS;
        let at_least_0 = low + (0x80 - u64::from(b'0')) * ONES;
        let above_colon = low + (0x7f - u64::from(b':')) * ONES;
        let not_dash = (low ^ (u64::from(b'-') * ONES)) + 0x7f * ONES;
        let hits = (at_least_0 & !above_colon | !not_dash) & !word & TOPS;
        if hits != 0 {
            return from + (hits.trailing_zeros() / 8) as usize;
        }
        from += 8;
    }
    while from < bytes.len() && !is_shape_byte(bytes[from]) {
        from += 1;
    }
    from
}

/// Sorts spans by start and merges overlaps in place: overlapping spans become one span over
/// their union (so every byte any rule found is covered), named for the longest of them, and
/// on a tie for the rule listed first (the more specific).
fn resolve_overlaps(spans: &mut Vec<(Span, usize)>) {
    spans.sort_unstable_by(|(a, pa), (b, pb)| {
        a.start
            .cmp(&b.start)
            .then(b.end.cmp(&a.end))
            .then(pa.cmp(pb))
    });
    let mut kept = 0;
    // The length of the longest span merged into the last kept one, which names it.
    let mut longest = 0;
    for i in 0..spans.len() {
        let span = spans[i];
        if kept > 0 && span.0.start < spans[kept - 1].0.end {
            let last = &mut spans[kept - 1];
            if span.0.len() > longest {
                longest = span.0.len();
                last.0.kind = span.0.kind;
                last.1 = span.1;
            }
            last.0.end = last.0.end.max(span.0.end);
            continue;
        }
        longest = span.0.len();
        spans[kept] = span;
        kept += 1;
    }
    spans.truncate(kept);
}

/// Detection for a deployment: one engine for tenants without their own configuration and
/// one per configured tenant.
#[derive(Debug, Clone)]
pub struct Redactor {
    base: Engine,
    tenants: HashMap<String, Engine>,
}

impl Redactor {
    /// Builds the engines `config` describes.
    pub fn new(config: &Config) -> Result<Redactor, RedactorError> {
        let mut kinds = Vec::with_capacity(EntityType::ALL.len());
        for name in &config.enabled_types {
            let expanded =
                EntityType::expand(name).ok_or_else(|| RedactorError::UnknownType(name.clone()))?;
            kinds.extend(expanded);
        }
        kinds.sort();
        kinds.dedup();
        fn spec<'a>(
            config: &'a Config,
            kinds: &'a [EntityType],
            t: Option<&'a crate::config::TenantConfig>,
        ) -> EngineSpec<'a> {
            EngineSpec {
                kinds,
                patterns: config
                    .patterns
                    .iter()
                    .chain(t.into_iter().flat_map(|t| t.patterns.iter()))
                    .collect(),
                names: config
                    .person_names
                    .iter()
                    .chain(t.into_iter().flat_map(|t| t.person_names.iter()))
                    .map(String::as_str)
                    .collect(),
                allow: config
                    .allow
                    .iter()
                    .chain(t.into_iter().flat_map(|t| t.allow.iter()))
                    .map(String::as_str)
                    .collect(),
                threshold: config.score_threshold,
            }
        }
        let base = Engine::build(&spec(config, &kinds, None))?;
        let tenants = config
            .tenants
            .iter()
            .map(|(id, t)| Engine::build(&spec(config, &kinds, Some(t))).map(|e| (id.clone(), e)))
            .collect::<Result<_, _>>()?;
        Ok(Redactor { base, tenants })
    }

    /// Builds a redactor for exactly these built-in types.
    pub fn with_types(kinds: &[EntityType]) -> Result<Redactor, RedactorError> {
        Ok(Redactor {
            base: Engine::builtin(kinds)?,
            tenants: HashMap::new(),
        })
    }

    /// The engine for `tenant`.
    pub fn engine(&self, tenant: &str) -> &Engine {
        self.tenants.get(tenant).unwrap_or(&self.base)
    }

    /// The types the deployment-wide engine finds.
    pub fn types(&self) -> impl Iterator<Item = EntityType> + '_ {
        self.base.types()
    }

    /// The entities the deployment-wide engine finds in `text`.
    pub fn find(&self, text: &str) -> Vec<Span> {
        self.base.find(text)
    }

    /// Masks every entity as `[REDACTED:<TYPE>]`; borrowed when nothing was found.
    pub fn redact<'t>(&self, text: &'t str) -> (Cow<'t, str>, Counts) {
        mask_all(&self.base, text)
    }
}

/// Masks every entity `engine` finds as `[REDACTED:<TYPE>]`; borrowed when nothing was found.
pub fn mask_all<'t>(engine: &Engine, text: &'t str) -> (Cow<'t, str>, Counts) {
    let spans = engine.find(text);
    let mut counts = Counts::new();
    if spans.is_empty() {
        return (Cow::Borrowed(text), counts);
    }
    let mut out = String::with_capacity(text.len() + spans.len() * 8);
    let mut at = 0;
    for span in &spans {
        out.push_str(&text[at..span.start]);
        out.push_str("[REDACTED:");
        out.push_str(span.kind.as_str());
        out.push(']');
        at = span.end;
        *counts.entry(span.kind.as_str()).or_insert(0) += 1;
    }
    out.push_str(&text[at..]);
    (Cow::Owned(out), counts)
}

/// Adds `more` into `into`.
pub fn add_counts(into: &mut Counts, more: &Counts) {
    for (k, v) in more {
        *into.entry(k).or_insert(0) += v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Redactor {
        Redactor::new(&Config::default()).unwrap()
    }

    #[test]
    fn clean_text_comes_back_borrowed() {
        let r = all();
        let text = "checkout p99 latency rose to 2.3s after deploy v1.2.3 on 2024-01-15";
        let (out, counts) = r.redact(text);
        assert!(matches!(out, Cow::Borrowed(_)), "{out}");
        assert!(counts.is_empty());
        assert!(matches!(r.redact("").0, Cow::Borrowed(_)));
    }

    #[test]
    fn masks_every_type_and_counts_them() {
        let r = all();
        let key = mcplane_shared::api_key::with_checksum("0123456789abcdefghijABCDEFGHIJ");
        let text = format!(
            "From alice@example.com (+44 20 7946 0958) at 10.0.0.12: card 4111 1111 1111 1111, \
             key {key} and bob@example.org."
        );
        let (out, counts) = r.redact(&text);
        assert_eq!(
            out,
            "From [REDACTED:EMAIL] ([REDACTED:PHONE]) at [REDACTED:IP]: card [REDACTED:CARD], \
             key [REDACTED:MCPLANE_KEY] and [REDACTED:EMAIL]."
        );
        assert_eq!(
            counts,
            Counts::from([
                ("EMAIL", 2),
                ("PHONE", 1),
                ("IP", 1),
                ("CARD", 1),
                ("MCPLANE_KEY", 1)
            ])
        );
    }

    #[test]
    fn overlapping_candidates_merge_and_are_named_by_the_longest_then_first_rule() {
        let span = |start, end, kind| Span { start, end, kind };
        let mut spans = vec![
            (span(5, 9, EntityType::Phone), 2),
            (span(0, 4, EntityType::Ip), 1),
            (span(5, 12, EntityType::Card), 3),
            (span(10, 20, EntityType::Password), 9),
            (span(10, 20, EntityType::GithubToken), 4),
            (span(20, 22, EntityType::Email), 1),
        ];
        resolve_overlaps(&mut spans);
        let kept: Vec<_> = spans
            .iter()
            .map(|(s, _)| (s.start, s.end, s.kind))
            .collect();
        assert_eq!(
            kept,
            vec![
                (0, 4, EntityType::Ip),
                (5, 20, EntityType::GithubToken),
                (20, 22, EntityType::Email)
            ]
        );
    }

    #[test]
    fn a_card_is_not_also_a_phone_number() {
        let (out, counts) = all().redact("pay with 5555-5555-5555-4444 now");
        assert_eq!(out, "pay with [REDACTED:CARD] now");
        assert_eq!(counts, Counts::from([("CARD", 1)]));
    }

    #[test]
    fn only_enabled_types_are_found() {
        let r = Redactor::new(&Config {
            enabled_types: vec!["email".into(), "SECRETS".into(), "Email".into()],
            ..Config::default()
        })
        .unwrap();
        assert!(r.types().any(|t| t == EntityType::Email));
        assert!(!r.types().any(|t| t == EntityType::Ip));
        let (out, _) = r.redact("alice@example.com from 10.0.0.1");
        assert_eq!(out, "[REDACTED:EMAIL] from 10.0.0.1");
    }

    #[test]
    fn unknown_types_are_refused() {
        let err = Redactor::new(&Config {
            enabled_types: vec!["SSNX".into()],
            ..Config::default()
        })
        .unwrap_err();
        assert_eq!(err, RedactorError::UnknownType("SSNX".into()));
    }

    #[test]
    fn non_ascii_text_is_sliced_on_char_boundaries() {
        let (out, counts) = all().redact("Grüße an jörg@example.com — ☎ +49 30 12345678 ✓");
        assert_eq!(out, "Grüße an [REDACTED:EMAIL] — ☎ [REDACTED:PHONE] ✓");
        assert_eq!(counts.get("PHONE"), Some(&1));
    }

    #[test]
    fn tenants_get_their_patterns_names_and_allow_list() {
        let doc = mcplane_shared::config::Document::parse(concat!(
            "[redaction]\nperson_names = [\"Priya Raman\"]\nallow = [\"support@example.com\"]\n",
            "[[redaction.tenants.acme.patterns]]\nname = \"EMPLOYEE_ID\"\nregex = \"EMP-[0-9]{6}\"\nkeywords = [\"emp-\"]\n",
            "[redaction.tenants.acme]\nperson_names = [\"Jonas Berg\"]\nallow = [\"ops@acme.example\"]\n",
        ))
        .unwrap();
        let config = doc.section::<Config>("redaction").unwrap();
        let r = Redactor::new(&config).unwrap();
        let text = "Priya Raman and Jonas Berg (EMP-123456) wrote to support@example.com and ops@acme.example";
        let names = |tenant: &str| {
            r.engine(tenant)
                .find(text)
                .iter()
                .map(|s| format!("{}={}", s.kind, &text[s.start..s.end]))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names("acme"),
            vec![
                "PERSON=Priya Raman",
                "PERSON=Jonas Berg",
                "EMPLOYEE_ID=EMP-123456"
            ]
        );
        assert_eq!(
            names("globex"),
            vec!["PERSON=Priya Raman", "EMAIL=ops@acme.example"]
        );
        // The dictionary is matched with its capitalisation, as a whole word.
        assert!(r.find("priya raman, Priya Ramanathan").is_empty());
    }

    #[test]
    fn weak_candidates_are_searched_only_within_reach_of_a_context_word() {
        let r = all();
        let filler = "the nightly batch finished without errors and the queue drained. ".repeat(4);
        let found = |text: &str| {
            r.find(text)
                .iter()
                .map(|s| format!("{}={}", s.kind, &text[s.start..s.end]))
                .collect::<Vec<_>>()
        };
        // The word after the date, the word before it, far into a longer text.
        let text = format!("{filler}1985-03-12 is her date of birth. {filler}");
        assert_eq!(found(&text), vec!["DOB=1985-03-12"]);
        let text = format!("{filler}SSN on file: 536228431 {filler}");
        assert_eq!(found(&text), vec!["SSN=536228431"]);
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let text = format!("{filler}aws_secret_access_key = {secret} {filler}");
        assert_eq!(found(&text), vec![format!("AWS_SECRET_KEY={secret}")]);
        // Out of reach: the same values with the word a paragraph away.
        let text = format!("date of birth: see below. {filler}1985-03-12 536228431");
        assert!(found(&text).is_empty(), "{:?}", found(&text));
    }

    type Candidates = Vec<(Span, usize)>;

    /// Every candidate the anchored tries find, in the order a scan of the same stretch finds
    /// them: the rules tried at their possible starts (digit runs, `@`) against the plain
    /// regex scan they replaced.
    fn anchored_and_scanned(text: &str) -> Vec<(Candidates, Candidates)> {
        let engine = Engine::builtin(&EntityType::ALL).unwrap();
        let mut pairs = Vec::new();
        for (i, rule) in engine.rules.iter().enumerate() {
            let (mut anchored, mut scanned) = (Vec::new(), Vec::new());
            match rule.trigger {
                Some(Trigger::Digits(_, starts)) => {
                    // A window cut short of the text's end, as around a digit run.
                    let to = floor_boundary(text, text.len() - text.len() / 7);
                    let mut number_starts = Vec::new();
                    number_starts_in(text, std::iter::once((0, to)), &mut number_starts);
                    engine.scan_starts(
                        i,
                        rule,
                        starts,
                        text,
                        0,
                        to,
                        &number_starts,
                        &[],
                        &mut anchored,
                    );
                    engine.scan(i, rule, text, 0, to, &[], &mut scanned);
                }
                Some(Trigger::AtSign) => {
                    engine.scan_at_signs(i, rule, text, &[], &mut anchored);
                    engine.scan(i, rule, text, 0, text.len(), &[], &mut scanned);
                }
                _ => continue,
            }
            pairs.push((anchored, scanned));
        }
        assert_eq!(pairs.len(), 5, "card, IBAN, phone, dashed SSN, e-mail");
        pairs
    }

    #[test]
    fn anchored_tries_find_what_a_scan_finds() {
        for text in [
            "card 4111 1111 1111 1111 2024, +44 20 7946 0958, (415) 555-2671, 536-22-8431",
            "ORD-4111111111111111 94111111111111111111 +1+14155552671 x536-22-8431 2021 415-555-2671",
            "DE89 3704 0044 0532 0130 00 TODAY, XDE89370400440532013000, GB82WEST12345698765432",
            "a@b@c.com alice@example.com@example.org .bob@x.io jörg@example.com mail@@x.com",
            "ab.cd@ef.gh-ij x@y.zz, @oncall a.b.c@d.e.fg 1@2.com",
        ] {
            for (anchored, scanned) in anchored_and_scanned(text) {
                assert_eq!(anchored, scanned, "{text}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn anchored_tries_agree_with_scans(text in "[0-9 +()./@a-zA-Z-]{0,80}") {
            for (anchored, scanned) in anchored_and_scanned(&text) {
                proptest::prop_assert_eq!(anchored, scanned);
            }
        }

        #[test]
        fn anchored_tries_agree_with_scans_on_number_shapes(
            parts in proptest::collection::vec(("[0-9]{1,5}", "[ +()./@a-zé-]{0,2}"), 0..12)
        ) {
            let text: String = parts.into_iter().map(|(d, s)| d + &s).collect();
            for (anchored, scanned) in anchored_and_scanned(&text) {
                proptest::prop_assert_eq!(anchored, scanned);
            }
        }
    }

    /// What [`Engine::find`] must return, the slow way: every rule that its keywords (if any)
    /// switch on scans the whole text, with none of the shape gates, windows, anchored tries
    /// or start tests that make `find` fast. The keyword pass itself is checked against
    /// Aho-Corasick in [`crate::keywords`].
    fn reference_find(engine: &Engine, text: &str) -> Vec<Span> {
        let mut found = Vec::new();
        let mut active = 0u128;
        let mut context = Vec::new();
        engine.keywords.for_each(text, |s, e, id| {
            let role = &engine.roles[id];
            active |= role.triggers;
            if role.context_of != 0 {
                context.push((s, e, role.context_of));
            }
            if let Some(name) = &role.person {
                if text[s..e] == **name
                    && !byte_before(text, s).is_some_and(is_word)
                    && !byte_at(text, e).is_some_and(is_word)
                {
                    let kind = EntityType::Person;
                    found.push((
                        Span {
                            start: s,
                            end: e,
                            kind,
                        },
                        0,
                    ));
                }
            }
        });
        for (i, rule) in engine.rules.iter().enumerate() {
            let bit = 1u128 << i.min(127);
            if engine.keyword_gated & bit != 0 && active & bit == 0 {
                continue;
            }
            engine.scan(i, rule, text, 0, text.len(), &context, &mut found);
        }
        resolve_overlaps(&mut found);
        found.into_iter().map(|(s, _)| s).collect()
    }

    fn with_names() -> Engine {
        let names: Vec<&str> = crate::corpus::PEOPLE.to_vec();
        Engine::build(&EngineSpec {
            kinds: &EntityType::ALL,
            patterns: Vec::new(),
            names,
            allow: Vec::new(),
            threshold: 0.5,
        })
        .unwrap()
    }

    /// Entities, near-misses and corpus sentences glued by the separators that make number
    /// shapes ambiguous.
    fn glued(seed: u64, parts: usize) -> String {
        use crate::corpus::{entity, generate, Rng};
        const GLUE: &[&str] = &[
            " ", "", "-", ".", ":", "+", "/", "(", ")", "_", "@", "\n", " 1", "9",
        ];
        const KINDS: &[&str] = &[
            "EMAIL",
            "PHONE",
            "CARD",
            "IBAN",
            "SSN",
            "IP",
            "MAC",
            "DOB",
            "ADDRESS",
            "PERSON",
            "AWS_ACCESS_KEY",
            "AWS_SECRET_KEY",
            "GITHUB_TOKEN",
            "JWT",
            "BASIC_AUTH",
            "PASSWORD",
            "MCPLANE_KEY",
            "BEARER_TOKEN",
            "API_KEY",
        ];
        let mut rng = Rng::new(seed);
        let mut text = String::new();
        for _ in 0..parts {
            text.push_str(rng.pick(GLUE));
            if rng.below(3) == 0 {
                let sample = &generate(rng.next_u64(), 1)[0].text;
                let cut = floor_boundary(sample, rng.below(sample.len() + 1));
                if rng.below(2) == 0 {
                    text.push_str(&sample[..cut]);
                } else {
                    text.push_str(&sample[cut..]);
                }
            } else {
                let kind = rng.pick(KINDS);
                text.push_str(&entity(&mut rng, kind));
            }
        }
        text
    }

    #[test]
    fn find_agrees_with_full_scans_on_the_corpus() {
        let engine = with_names();
        let corpus = crate::corpus::generate(77, 2000);
        let mut entities = 0;
        for sample in &corpus {
            let found = engine.find(&sample.text);
            entities += found.len();
            assert_eq!(
                found,
                reference_find(&engine, &sample.text),
                "{}",
                sample.text
            );
        }
        assert!(
            entities > 2000,
            "the corpus is dense in entities: {entities}"
        );
    }

    #[test]
    fn the_buffers_kept_between_calls_carry_nothing_over() {
        let engine = with_names();
        let dense = "mail a@example.com or call +44 20 7946 0958 from 10.0.0.1; ".repeat(600);
        let found = engine.find(&dense);
        assert_eq!(found, reference_find(&engine, &dense));
        assert!(
            found.len() > Scratch::KEEP,
            "more spans than a buffer keeps"
        );
        SCRATCH.with(|cell| {
            let scratch = cell.borrow();
            assert!(
                scratch.found.capacity() <= Scratch::KEEP,
                "trimmed after use"
            );
        });
        // Nothing of the texts before shows up in the next ones.
        assert!(engine.find("nothing to see here").is_empty());
        let one = "write to b@example.org";
        assert_eq!(engine.find(one), reference_find(&engine, one));
        assert_eq!(engine.find(one).len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn find_agrees_with_full_scans_on_glued_fragments(seed in proptest::prelude::any::<u64>(), parts in 1usize..8) {
            let engine = with_names();
            let text = glued(seed, parts);
            proptest::prop_assert_eq!(engine.find(&text), reference_find(&engine, &text), "{}", text);
        }
    }

    proptest::proptest! {
        #[test]
        fn next_shape_byte_finds_what_a_byte_loop_finds(
            text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            from in 0usize..40,
        ) {
            let from = from.min(text.len());
            let expected = (from..text.len())
                .find(|&i| is_shape_byte(text[i]))
                .unwrap_or(text.len());
            proptest::prop_assert_eq!(next_shape_byte(&text, from), expected);
        }
    }

    #[test]
    fn context_words_lift_weak_candidates() {
        let r = all();
        assert!(r.find("order 536228431 shipped").is_empty());
        let spans = r.find("SSN: 536228431");
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].kind, EntityType::Ssn);
    }
}
