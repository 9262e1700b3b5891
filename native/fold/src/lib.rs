//! QExplorer's disguise folding of listings in compiled code.
//!
//! The reference is Python's `qexplorer.search.normalize` (`normalize`, `index_fields`):
//! what this crate folds, it folds to the same text and the same Chinese words and pinyin, and
//! cuts into the same tokens (the index takes them as they are: its text fields split on
//! spaces). What it cannot fold exactly it does not guess: such a text
//! (or a listing holding one) comes back as "the reference's", and Python folds it. The
//! character tables come from Python at start (`Folder::new`), so both sides read a character
//! the same way: its skeleton and lowercase (computed by the reference), each Han character's
//! pinyin (pypinyin's), and the classes of the index's token pattern (computed by the
//! reference's regex engine, so a token ends where the reference's ends).
//!
//! Folded here: any text of ASCII and the table's characters (Han, emoji, punctuation,
//! full-width forms, accented Latin, invisible characters), disguised or not; a disguise
//! (leetspeak, stretched or spaced-out letters, a word broken by a mark) where the text around
//! it holds no letter, digit or mark beyond ASCII; and the Chinese words (jieba-rs, the version
//! rjieba wraps) and pinyin of Han text. Left to the reference: a text holding a character
//! outside the table (letters of scripts with words of their own, look-alikes among them,
//! combining marks, joiners), and a disguise beside non-ASCII letters.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use pyo3::prelude::*;

/// What folding one text gave.
enum Norm {
    /// the text the index holds in place of it (None: the text as written) and the other
    /// readings of its disguised words
    Folded(Option<String>, Vec<String>),
    /// the reference must fold it
    Reference,
}

/// A character's part in the index's token pattern
/// (`[single]|[starts][starts or continues]*`); the classes do not overlap.
#[derive(Clone, Copy)]
enum TokenClass {
    None,
    /// a token by itself (a Han character, a symbol)
    Single,
    /// starts a token and continues one (a letter or digit)
    Starts,
    /// only continues a token (a mark)
    Continues,
}

/// A table by character: an array for the Basic Multilingual Plane (a lookup a character of
/// every non-ASCII text), a map for the rest.
struct CharMap<V> {
    bmp: Vec<Option<V>>,
    other: HashMap<char, V>,
}

impl<V> CharMap<V> {
    fn from(map: HashMap<char, V>) -> Self {
        let mut bmp: Vec<Option<V>> = (0..0x10000).map(|_| None).collect();
        let mut other = HashMap::new();
        for (c, v) in map {
            match bmp.get_mut(c as usize) {
                Some(slot) => *slot = Some(v),
                None => {
                    other.insert(c, v);
                }
            }
        }
        Self { bmp, other }
    }

    fn get(&self, c: char) -> Option<&V> {
        match self.bmp.get(c as usize) {
            Some(slot) => slot.as_ref(),
            None => self.other.get(&c),
        }
    }
}

/// The folding's tables and the Chinese segmenter, built once per process.
#[pyclass(frozen, module = "qexplorer_fold")]
struct Folder {
    /// a non-ASCII character -> (its skeleton, its lowercase, whether it is a Latin letter,
    /// whether a text of such characters is folded by lowercasing alone)
    chars: CharMap<(String, String, bool, bool)>,
    /// a Han character -> its toneless pinyin
    pinyin: CharMap<String>,
    /// each character's part in a token (the index's token pattern)
    token: Vec<TokenClass>,
    /// tokens longer than this (UTF-8 bytes) are dropped, as the reference's analyzer does
    max_token_bytes: usize,
    jieba: jieba_rs::Jieba,
    /// toneless pinyin syllables (typed pinyin is read with them)
    syllables: HashSet<String>,
    /// non-ASCII symbols: neither letter, digit nor mark to any of the reference's patterns
    symbols: HashSet<char>,
    /// ASCII characters that make a text holding a non-ASCII one more than lowercased (capitals
    /// of look-alikes: `S` of `ſ`)
    foldable_ascii: HashSet<char>,
}

#[pymethods]
impl Folder {
    /// `chars`: the non-ASCII characters folded here, each with its skeleton, lowercase,
    /// whether it is a Latin letter (variation selectors after one are dropped) and whether
    /// the reference only lowercases a text of such characters (its `_plain`);
    /// `pinyin`: the toneless pinyin of each Han character; `syllables`: every toneless pinyin
    /// syllable; `symbols`: the non-ASCII characters that are neither letters, digits nor
    /// marks to the reference (and fold to themselves); `foldable_ascii`: the ASCII characters
    /// that keep a non-ASCII text from being only lowercased; `token_classes`: the code point
    /// ranges of the index's token pattern's three classes (a token of one character, the first
    /// character of a longer token, a character continuing one), tokens of at most
    /// `max_token_bytes` bytes.
    #[new]
    fn new(
        chars: HashMap<char, (String, String, bool, bool)>,
        pinyin: HashMap<char, String>,
        syllables: HashSet<String>,
        symbols: HashSet<char>,
        foldable_ascii: HashSet<char>,
        token_classes: [Vec<(u32, u32)>; 3],
        max_token_bytes: usize,
    ) -> PyResult<Self> {
        let mut token = vec![TokenClass::None; 0x11_0000];
        let [single, start, cont] = token_classes;
        for (ranges, class) in [
            (cont, TokenClass::Continues),
            (start, TokenClass::Starts),
            (single, TokenClass::Single),
        ] {
            for (lo, hi) in ranges {
                for slot in &mut token[lo as usize..=(hi as usize).min(0x10_FFFF)] {
                    *slot = class;
                }
            }
        }
        Ok(Self {
            chars: CharMap::from(chars),
            pinyin: CharMap::from(pinyin),
            syllables,
            symbols,
            foldable_ascii,
            token,
            max_token_bytes,
            jieba: jieba_rs::Jieba::new(),
        })
    }

    /// `normalize(text)` as `(the text the index holds or None, its variants)`, or None when
    /// the reference must fold it.
    fn normalize(&self, text: &str) -> Option<(Option<String>, Vec<String>)> {
        match self.fold(text) {
            Norm::Folded(t, variants) => Some((t, variants)),
            Norm::Reference => None,
        }
    }

    /// `index_fields(title, description, fold)` of each pair, in order: the fields the index
    /// holds of the listing, or None where the reference must make them. The work runs
    /// without the GIL.
    fn index_listings(
        &self,
        py: Python<'_>,
        pairs: Vec<(String, String)>,
        fold: bool,
    ) -> Vec<Option<HashMap<&'static str, String>>> {
        py.allow_threads(|| {
            pairs
                .iter()
                .map(|(t, d)| self.index_listing(t, d, fold))
                .collect()
        })
    }

    /// The reference's `analyze(text)`, space-separated, or None where it must analyze it.
    fn analyze(&self, text: &str) -> Option<String> {
        self.analyzed(text)
    }
}

impl Folder {
    /// A listing's fields as the index holds them: the (folded) title, description and other
    /// readings as tokens, the Chinese words and pinyin as they are.
    fn index_listing(
        &self,
        title: &str,
        description: &str,
        fold: bool,
    ) -> Option<HashMap<&'static str, String>> {
        let mut fields = if fold {
            self.listing(title, description)?
        } else {
            HashMap::new()
        };
        for (name, text) in [("title", title), ("description", description)] {
            let tokens = self.analyzed(fields.get(name).map_or(text, String::as_str))?;
            fields.insert(name, tokens);
        }
        if let Some(variants) = fields.remove("variants") {
            let tokens = self.analyzed(&variants)?;
            if !tokens.is_empty() {
                fields.insert("variants", tokens);
            }
        }
        Some(fields)
    }

    /// The index's tokens of `text` (the pattern's matches, those over the byte limit dropped,
    /// lowercased as the reference lowercases each character), space-separated; None when a
    /// token holds a character outside the table (the reference lowercases it).
    fn analyzed(&self, text: &str) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        for token in self.tokens(text) {
            if token.len() > self.max_token_bytes {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            if token.is_ascii() {
                out.extend(token.chars().map(|c| c.to_ascii_lowercase()));
                continue;
            }
            for c in token.chars() {
                if c.is_ascii() {
                    out.push(c.to_ascii_lowercase());
                } else {
                    out.push_str(&self.chars.get(c)?.1);
                }
            }
        }
        Some(out)
    }

    fn listing(&self, title: &str, description: &str) -> Option<HashMap<&'static str, String>> {
        let mut fields = HashMap::new();
        let mut variants: Vec<String> = Vec::new();
        let mut texts: Vec<Cow<str>> = Vec::with_capacity(2);
        for (name, text) in [("title", title), ("description", description)] {
            let Norm::Folded(normal, more) = self.fold(text) else {
                return None;
            };
            for v in more {
                if !variants.contains(&v) {
                    variants.push(v);
                }
            }
            match normal {
                Some(t) => {
                    fields.insert(name, t.clone());
                    texts.push(Cow::Owned(t));
                }
                None => texts.push(Cow::Borrowed(text)),
            }
        }
        if !variants.is_empty() {
            fields.insert("variants", variants.join(" "));
        }
        let (title, description) = (&texts[0], &texts[1]);
        if !title.chars().chain(description.chars()).any(is_han) {
            return Some(fields);
        }
        let normal: Vec<char> = title
            .chars()
            .chain(['\n'])
            .chain(description.chars())
            .collect();
        let text = join_spaced_han(&normal);
        let runs = han_runs(&text);
        let mut words: Vec<&str> = Vec::new();
        for run in &runs {
            for token in self.jieba.cut(run, false) {
                if token.word.chars().count() > 1 && !words.contains(&token.word) {
                    words.push(token.word);
                }
            }
        }
        if !words.is_empty() {
            fields.insert("words", words.join(" "));
        }
        let sounds: Vec<String> = runs
            .iter()
            .map(|run| {
                run.chars()
                    .map(|c| self.pinyin.get(c).cloned().unwrap_or_else(|| c.to_string()))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if !sounds.is_empty() {
            fields.insert("pinyin", sounds.join(" _ "));
        }
        Some(fields)
    }

    /// The reference's `normalize`.
    fn fold(&self, text: &str) -> Norm {
        if text.is_empty() || self.clean_ascii(text) {
            return Norm::Folded(None, Vec::new());
        }
        let Some((folded, lowered)) = self.skeleton(text) else {
            return Norm::Reference;
        };
        let chars: Vec<char> = folded.chars().collect();
        let (normal, variants) = if !suspect(&chars) {
            (folded, Vec::new())
        } else if self.plain(&chars) {
            self.read_disguises(&chars)
        } else {
            return Norm::Reference;
        };
        let same = normal == lowered || self.tokens(&normal) == self.tokens(&lowered);
        let base = if same { lowered } else { normal };
        let base_chars: Vec<char> = base.chars().collect();
        let plain = self.plain(&base_chars);
        if !broken_hint(&base_chars, plain) {
            return Norm::Folded((!same).then_some(base), variants);
        }
        if !plain {
            return Norm::Reference;
        }
        let read = with_broken_readings(&base_chars);
        if read != base {
            Norm::Folded(Some(read), variants)
        } else {
            Norm::Folded((!same).then_some(base), variants)
        }
    }

    /// True for printable ASCII with nothing that could be a disguise: its skeleton is its
    /// lowercase, as written to the analyzer (most text; the general path gives the same).
    fn clean_ascii(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        if !bytes.iter().all(|b| (b' '..=b'~').contains(b)) {
            return false;
        }
        let lower = bytes.to_ascii_lowercase();
        !suspect(&lower) && !broken_hint(&lower, true)
    }

    /// The reference's `_normalize` of a suspect plain skeleton: spaced-out words joined, each
    /// leetspeak or stretched word read (the first reading in its place, the others apart).
    fn read_disguises(&self, folded: &[char]) -> (String, Vec<String>) {
        let syllables = &self.syllables;
        let stretched = folded
            .windows(3)
            .any(|w| w[0].is_ascii_lowercase() && w[0] == w[1] && w[1] == w[2]);
        let joined = join_spaced(folded);
        let mut reader = Reader {
            syllables,
            stretched,
            variants: Vec::new(),
        };
        let mut out = String::with_capacity(joined.len());
        let mut i = 0;
        while i < joined.len() {
            if !leet_word_char(joined[i]) {
                out.push(joined[i]);
                i += 1;
                continue;
            }
            let start = i;
            while i < joined.len() && leet_word_char(joined[i]) {
                i += 1;
            }
            let run = &joined[start..i];
            if !stretched && run.iter().all(char::is_ascii_alphabetic) {
                out.extend(run); // a plain word (most words): nothing to read
                continue;
            }
            // an address (joe@mail.com): its @ is no a, each of its words is read alone
            let trimmed = run
                .iter()
                .rposition(|&b| b != '@')
                .map_or(&run[..0], |k| &run[..=k]);
            let address = trimmed.contains(&'@')
                && joined.get(i) == Some(&'.')
                && joined.get(i + 1).is_some_and(|b| b.is_ascii_alphabetic());
            out.push_str(&reader.read(run, !address));
        }
        (out, reader.variants)
    }

    /// True when the text holds only ASCII and the symbols of the table (no letter, digit or
    /// mark other than ASCII ones): where the reference's patterns read it as this crate does.
    fn plain(&self, text: &[char]) -> bool {
        text.iter()
            .all(|c| c.is_ascii() || self.symbols.contains(c))
    }

    /// The text's skeleton (invisible characters dropped, whitespace ones spaced, each
    /// character folded, a variation selector dropped after a Latin letter as the reference
    /// drops marks there) and its lowercase; None when a character is outside the table. A
    /// text the reference only lowercases (printable, of characters that fold to their
    /// lowercase: its `_plain`) has its lowercase as its skeleton, selectors kept.
    fn skeleton(&self, text: &str) -> Option<(String, String)> {
        let mut folded = String::with_capacity(text.len());
        let mut lowered = String::with_capacity(text.len());
        let mut after_latin = false;
        let (mut plain, mut foldable_ascii) = (true, false);
        for c in text.chars() {
            if c.is_ascii() {
                lowered.push(c.to_ascii_lowercase());
                plain &= (' '..='~').contains(&c);
                foldable_ascii |= self.foldable_ascii.contains(&c);
                if matches!(c, '\t' | '\n' | '\r' | '\x0b' | '\x0c' | '\x1c'..='\x1f') {
                    folded.push(' ');
                    after_latin = false;
                } else if !c.is_ascii_control() {
                    folded.push(c.to_ascii_lowercase());
                    after_latin = c.is_ascii_alphabetic();
                }
            } else if ('\u{fe00}'..='\u{fe0f}').contains(&c) {
                // printable, NFKC-stable, folded by no table: plain to the reference
                lowered.push(c);
                if !after_latin {
                    folded.push(c);
                }
            } else {
                let (skeleton, lower, latin, plain_char) = self.chars.get(c)?;
                folded.push_str(skeleton);
                lowered.push_str(lower);
                plain &= *plain_char;
                if !skeleton.is_empty() {
                    after_latin = *latin;
                }
            }
        }
        if plain && (text.is_ascii() || !foldable_ascii) {
            folded.clone_from(&lowered);
        }
        Some((folded, lowered))
    }

    /// The token pattern's matches in `text`, in order: a character of the single class
    /// alone, or a starting character and the continuing ones after it.
    fn tokens<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut start: Option<usize> = None;
        for (at, c) in text.char_indices() {
            let class = self.token[c as usize];
            if let Some(from) = start {
                if matches!(class, TokenClass::Starts | TokenClass::Continues) {
                    continue;
                }
                out.push(&text[from..at]);
                start = None;
            }
            match class {
                TokenClass::Single => out.push(&text[at..at + c.len_utf8()]),
                TokenClass::Starts => start = Some(at),
                TokenClass::None | TokenClass::Continues => {}
            }
        }
        if let Some(from) = start {
            out.push(&text[from..]);
        }
        out
    }
}

/// The reference's `_suspect`: a leetspeak character by a letter, three equal letters, or
/// single letters spaced out.
fn suspect<T: Copy + Into<char>>(text: &[T]) -> bool {
    let at = |i: usize| text.get(i).map(|&c| c.into());
    let az = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase());
    let leet_digit = |c: Option<char>| matches!(c, Some('0' | '1' | '3'..='5' | '7'..='9'));
    for i in 0..text.len() {
        let c = at(i);
        if leet_digit(c) || matches!(c, Some('@' | '$' | '!' | '|')) {
            if (i > 0 && az(at(i - 1))) || az(at(i + 1)) || (leet_digit(at(i + 1)) && az(at(i + 2)))
            {
                return true;
            }
        }
        if az(c) && at(i + 1) == c && at(i + 2) == c {
            return true;
        }
    }
    // on " " + text: separator, letter, one or two separators, letter, separator
    let sep =
        |c: Option<char>| matches!(c, Some(' ' | '.' | '-' | '_' | '*' | '·' | '•' | '~' | '+'));
    let unit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let spaced = |i: usize| if i == 0 { Some(' ') } else { at(i - 1) };
    for i in 0..=text.len() {
        if sep(spaced(i)) && unit(spaced(i + 1)) {
            for gap in 1..=2 {
                if (0..gap).all(|k| sep(spaced(i + 2 + k)))
                    && unit(spaced(i + 2 + gap))
                    && sep(spaced(i + 3 + gap))
                {
                    return true;
                }
            }
        }
    }
    false
}

/// The reference's `_BROKEN_HINT` (a letter, a mark, a letter) in a `plain` text, at least
/// where it is in another: there any non-ASCII character counts as a letter.
fn broken_hint<T: Copy + Into<char>>(text: &[T], plain: bool) -> bool {
    let letter = |c: char| c.is_ascii_alphabetic() || (!plain && !c.is_ascii());
    text.windows(3)
        .any(|w| letter(w[0].into()) && MARKS.contains(w[1].into()) && letter(w[2].into()))
}

/// A character of the reference's `_LEET_WORD` in a plain text: a letter, a digit or a symbol put
/// for a letter.
fn leet_word_char(b: char) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, '@' | '$' | '!' | '|')
}

fn leet(b: char) -> Option<char> {
    Some(match b {
        '0' => 'o',
        '3' => 'e',
        '4' => 'a',
        '5' => 's',
        '7' => 't',
        '8' => 'b',
        '9' => 'g',
        '@' => 'a',
        '$' => 's',
        '|' => 'l',
        _ => return None,
    })
}

/// The reference's `_REPEAT`: a letter three times or more in a row.
fn has_repeat(w: &[char]) -> bool {
    w.windows(3)
        .any(|x| x[0].is_ascii_alphabetic() && x[0] == x[1] && x[1] == x[2])
}

/// Each run of three or more equal letters cut to `keep` letters.
fn cut_repeats(w: &[char], keep: usize) -> Vec<char> {
    let mut out = Vec::with_capacity(w.len());
    let mut i = 0;
    while i < w.len() {
        let mut j = i;
        while j < w.len() && w[j] == w[i] {
            j += 1;
        }
        let n = if w[i].is_ascii_alphabetic() && j - i >= 3 {
            keep
        } else {
            j - i
        };
        out.extend(std::iter::repeat_n(w[i], n));
        i = j;
    }
    out
}

fn push_new(list: &mut Vec<Vec<char>>, item: Vec<char>) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// The reference's `_unleet`.
fn unleet(word: &[char]) -> Vec<Vec<char>> {
    if !word
        .iter()
        .any(|&b| b.is_ascii_digit() || matches!(b, '@' | '$' | '!' | '|'))
        || word.windows(3).any(|w| w.iter().all(char::is_ascii_digit))
        || word.iter().filter(|b| b.is_ascii_alphabetic()).count() < 2
    {
        return Vec::new();
    }
    let ambiguous = word.iter().filter(|&&b| b == '1' || b == '!').count();
    let mut readings: Vec<Vec<char>> =
        vec![Vec::new(); if ambiguous <= 2 { 1 << ambiguous } else { 2 }];
    let mut seen = 0;
    for &b in word {
        if let Some(letter) = leet(b) {
            readings.iter_mut().for_each(|r| r.push(letter));
        } else if b == '1' || b == '!' {
            for (k, r) in readings.iter_mut().enumerate() {
                let pick = if ambiguous <= 2 { (k >> seen) & 1 } else { k };
                r.push(if pick == 0 { 'i' } else { 'l' });
            }
            seen += 1;
        } else if b.is_ascii_digit() {
            return Vec::new();
        } else {
            readings.iter_mut().for_each(|r| r.push(b));
        }
    }
    let mut out = Vec::new();
    for r in readings {
        push_new(&mut out, r);
    }
    out
}

/// The reference's `_unrepeat`.
fn unrepeat(word: &[char]) -> Vec<Vec<char>> {
    let distinct = word.iter().collect::<HashSet<_>>().len();
    if !has_repeat(word) || distinct < 2 {
        return Vec::new();
    }
    let (first, last) = (word[0], word[word.len() - 1]);
    let mut w = word.to_vec();
    if w.len() >= 3 && w[..3].iter().all(|&b| b == first) && first.is_ascii_alphabetic() {
        let rest = w.iter().position(|&b| b != first).unwrap_or(w.len());
        w = [&[first][..], &w[rest..]].concat();
    }
    if w.len() >= 3 && w[w.len() - 3..].iter().all(|&b| b == last) && last.is_ascii_alphabetic() {
        let keep = w.iter().rposition(|&b| b != last).map_or(0, |k| k + 1);
        w = [&w[..keep], &[last][..]].concat();
    }
    let mut out = Vec::new();
    push_new(&mut out, cut_repeats(&w, 1));
    push_new(&mut out, cut_repeats(&w, 2));
    out
}

/// The reference's `_readings`.
fn readings(word: &[char]) -> Vec<Vec<char>> {
    let mut found = unleet(word);
    found.sort_by_key(|r| has_repeat(r));
    if found.is_empty() && !has_repeat(word) {
        return Vec::new();
    }
    if found.is_empty() {
        found.push(word.to_vec());
    }
    let mut forms = Vec::new();
    for reading in found {
        let cut = unrepeat(&reading);
        if cut.is_empty() {
            push_new(&mut forms, reading);
        } else {
            cut.into_iter().for_each(|c| push_new(&mut forms, c));
        }
    }
    forms
}

/// Reads the words of a suspect text (the reference's `read` in `_normalize`).
struct Reader<'a> {
    syllables: &'a HashSet<String>,
    stretched: bool,
    variants: Vec<String>,
}

impl Reader<'_> {
    fn read(&mut self, run: &[char], whole: bool) -> String {
        if !run.is_empty() && run.iter().all(char::is_ascii_alphabetic) && !self.stretched {
            return ascii(run);
        }
        let start = run
            .iter()
            .position(|b| !matches!(b, '@' | '!' | '|'))
            .unwrap_or(run.len());
        let rest = &run[start..];
        let end = rest
            .iter()
            .rposition(|b| !matches!(b, '!' | '|'))
            .map_or(0, |k| k + 1);
        let (head, core, tail) = (&run[..start], &rest[..end], &rest[end..]);
        if let Some(toneless) = self.toneless(core) {
            return ascii(head) + &toneless + &ascii(tail);
        }
        let found = if whole && !core.is_empty() && core.len() <= 44 {
            readings(core)
        } else {
            Vec::new()
        };
        if let Some((first, others)) = found.split_first() {
            for v in others {
                let v = ascii(v);
                if !self.variants.contains(&v) {
                    self.variants.push(v);
                }
            }
            return ascii(head) + &ascii(first) + &ascii(tail);
        }
        // not read as a whole: each word between symbols is
        let symbol = |b: &char| matches!(b, '@' | '$' | '!' | '|');
        if !core.iter().any(symbol) {
            return ascii(run);
        }
        let mut out = ascii(head);
        let mut i = 0;
        while i < core.len() {
            let j = i + core[i..].iter().position(symbol).unwrap_or(core.len() - i);
            out += &self.read(&core[i..j], true);
            let k = j + core[j..]
                .iter()
                .position(|b| !symbol(b))
                .unwrap_or(core.len() - j);
            out += &ascii(&core[j..k]);
            i = k;
        }
        out + &ascii(tail)
    }

    /// The reference's `_toneless`: pinyin typed with a tone number after every syllable.
    fn toneless(&self, word: &[char]) -> Option<String> {
        if !word.last()?.is_ascii_digit() || !word[0].is_ascii_alphabetic() {
            return None;
        }
        let mut out = String::new();
        let mut i = 0;
        while i < word.len() {
            let j = i + word[i..].iter().position(|b| !b.is_ascii_alphabetic())?;
            let syllable = ascii(&word[i..j]);
            if j == i || !matches!(word[j], '1'..='5') || !self.syllables.contains(&syllable) {
                return None;
            }
            out += &syllable;
            i = j + 1;
        }
        Some(out)
    }
}

fn ascii(chars: &[char]) -> String {
    chars.iter().collect()
}

/// The reference's `_join_spaced` on a plain text: three or more single letters or digits, each
/// followed by the same one or two separators, joined (a change of separator ends a word).
fn join_spaced(s: &[char]) -> Vec<char> {
    let unit = |i: usize| s.get(i).is_some_and(|b| b.is_ascii_alphanumeric());
    let sep = |i: usize| {
        s.get(i)
            .is_some_and(|b| matches!(b, ' ' | '.' | '-' | '_' | '*' | '·' | '•' | '~' | '+'))
    };
    let word_like = |i: usize| {
        s.get(i)
            .is_some_and(|&b| b.is_ascii_alphanumeric() || matches!(b, '_' | '@' | '$'))
    };
    let mut out = Vec::with_capacity(s.len());
    let mut p = 0;
    while p < s.len() {
        if unit(p) && (p == 0 || !word_like(p - 1)) {
            // the units and the gaps after them, as long as a gap of one or two separators
            // leads to the next unit (at most 40 gaps)
            let mut units = vec![p];
            let mut gaps: Vec<(usize, usize)> = Vec::new();
            let mut at = p;
            while gaps.len() < 40 {
                let n = (1..=2)
                    .rev()
                    .find(|&n| (1..=n).all(|k| sep(at + k)) && unit(at + n + 1));
                let Some(n) = n else { break };
                gaps.push((at + 1, at + 1 + n));
                at += n + 1;
                units.push(at);
            }
            // the last unit must not be followed by a word character (fewer gaps otherwise)
            let mut k = gaps.len();
            while k >= 2 && word_like(units[k] + 1) {
                k -= 1;
            }
            if k >= 2 {
                let words = spaced_words(s, &units[..=k], &gaps[..k]);
                out.extend_from_slice(words.join(&' ').as_slice());
                p = units[k] + 1;
                continue;
            }
        }
        out.push(s[p]);
        p += 1;
    }
    out
}

/// The reference's `_spaced_words`.
fn spaced_words(s: &[char], units: &[usize], gaps: &[(usize, usize)]) -> Vec<Vec<char>> {
    let gap = |i: usize| &s[gaps[i].0..gaps[i].1];
    let mut words = Vec::new();
    let mut current = vec![s[units[0]]];
    let mut separator: Option<&[char]> = None;
    for i in 0..gaps.len() {
        let following = if i + 1 < gaps.len() {
            gap(i + 1)
        } else {
            gap(i)
        };
        if separator.is_none() && gap(i) == following {
            separator = Some(gap(i));
        }
        if Some(gap(i)) == separator {
            current.push(s[units[i + 1]]);
        } else {
            words.push(std::mem::replace(&mut current, vec![s[units[i + 1]]]));
            separator = None;
        }
    }
    words.push(current);
    words
}

/// The reference's `_BROKEN.sub(_with_readings, text)` on a plain text: each word broken by
/// marks followed by (or replaced with) its readings.
fn with_broken_readings(s: &[char]) -> String {
    let letter = |i: usize| s.get(i).is_some_and(|b| b.is_ascii_alphabetic());
    let alnum = |i: usize| s.get(i).is_some_and(|b| b.is_ascii_alphanumeric());
    let mark = |i: usize| s.get(i).is_some_and(|b| MARKS.contains(*b));
    let mut out = String::with_capacity(s.len() + 16);
    let mut p = 0;
    while p < s.len() {
        if letter(p) && letter(p + 1) && (p == 0 || !alnum(p - 1)) {
            let mut ends = Vec::new(); // where each (mark, letters) ends
            let mut at = p;
            while letter(at) {
                at += 1;
            }
            while mark(at) && letter(at + 1) {
                at += 1;
                while letter(at) {
                    at += 1;
                }
                ends.push(at);
            }
            if ends.last().is_some_and(|&end| alnum(end)) {
                ends.pop(); // a digit goes on from its last part: the word ends a part earlier
            }
            if let Some(&end) = ends.last() {
                out += &word_with_readings(&s[p..end]);
                p = end;
                continue;
            }
            while letter(p) {
                out.push(s[p]);
                p += 1;
            }
            continue;
        }
        out.push(s[p]);
        p += 1;
    }
    out
}

/// The reference's `_MARKS`: what sellers break a word with or put for a letter.
const MARKS: &str = "-._*#·•~+'’";

/// The reference's `_with_readings` of one broken word.
fn word_with_readings(word: &[char]) -> String {
    let parts: Vec<&[char]> = word.split(|b| MARKS.contains(*b)).collect();
    let marks: Vec<char> = word
        .iter()
        .copied()
        .filter(|b| MARKS.contains(*b))
        .collect();
    let mut found = Vec::new();
    if parts.iter().all(|p| p.len() >= 2) && marks.iter().all(|m| "-._·•~+'’".contains(*m)) {
        found.push(ascii(&parts.concat()));
    }
    if parts.len() == 2
        && "*#_.".contains(marks[0])
        && parts[0].len().min(parts[1].len()) >= 2
        && parts[0].len() + parts[1].len() >= 4
    {
        found.push(format!("{}\u{01c2}{}", ascii(parts[0]), ascii(parts[1])));
    }
    found.retain(|r| r.len() <= 39);
    if found.is_empty() {
        return ascii(word);
    }
    if marks.iter().all(|m| "-._".contains(*m)) && parts.iter().all(|p| p.len() >= 3) {
        found.insert(0, ascii(word));
    }
    found.join(" ")
}

/// Han characters, as `qexplorer.search.text.HAN`.
fn is_han(c: char) -> bool {
    matches!(c as u32,
        0x3005 | 0x3007 | 0x3021..=0x3029 | 0x3038..=0x303b | 0x3400..=0x4dbf | 0x4e00..=0x9fff
        | 0xf900..=0xfaff | 0x20000..=0x3134f)
}

/// The reference's `join_spaced_han`: single Han characters standing apart, by one or two
/// spacers each, joined into one run.
fn join_spaced_han(c: &[char]) -> Vec<char> {
    let spacer = |i: usize| {
        matches!(
            c.get(i),
            Some(' ' | '.' | '·' | '•' | '*' | '~' | '+' | '-')
        )
    };
    let han = |i: usize| c.get(i).is_some_and(|&x| is_han(x));
    let mut out = Vec::with_capacity(c.len());
    let mut i = 0;
    while i < c.len() {
        if han(i) && (i == 0 || !han(i - 1)) {
            let mut end = i;
            loop {
                if spacer(end + 1) && spacer(end + 2) && han(end + 3) && !han(end + 4) {
                    end += 3;
                } else if spacer(end + 1) && han(end + 2) && !han(end + 3) {
                    end += 2;
                } else {
                    break;
                }
            }
            if end > i {
                out.extend(c[i..=end].iter().filter(|&&x| is_han(x)));
                i = end + 1;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// The runs of two or more Han characters.
fn han_runs(text: &[char]) -> Vec<String> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < text.len() {
        if !is_han(text[start]) {
            start += 1;
            continue;
        }
        let mut end = start;
        while end < text.len() && is_han(text[end]) {
            end += 1;
        }
        if end - start >= 2 {
            runs.push(text[start..end].iter().collect());
        }
        start = end;
    }
    runs
}

#[pymodule]
fn qexplorer_fold(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Folder>()?;
    Ok(())
}
