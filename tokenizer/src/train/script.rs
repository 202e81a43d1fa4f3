//! A compact Unicode script classifier for the trainer's rule that a piece must not mix scripts.

/// Script classes; `Common` covers punctuation, digits and symbols, `Inherited` combining marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Script {
    Common,
    Inherited,
    Latin,
    Greek,
    Cyrillic,
    Armenian,
    Hebrew,
    Arabic,
    /// One Indic or Southeast-Asian block, identified by its block start.
    Brahmic(u32),
    Han,
    Hangul,
    Other(u32),
}

pub(crate) fn script(c: char) -> Script {
    let u = c as u32;
    match u {
        0x41..=0x5a | 0x61..=0x7a | 0xaa | 0xba => Script::Latin,
        0..=0x7f => Script::Common,
        0xc0..=0xd6 | 0xd8..=0xf6 | 0xf8..=0x24f => Script::Latin,
        0x80..=0xbf | 0xd7 | 0xf7 => Script::Common,
        0x250..=0x2af | 0x1d00..=0x1d7f | 0x1e00..=0x1eff | 0x2c60..=0x2c7f | 0xa720..=0xa7ff => {
            Script::Latin
        }
        0xff21..=0xff3a | 0xff41..=0xff5a => Script::Latin,
        0x2b0..=0x2ff => Script::Common,
        0x300..=0x36f
        | 0x1ab0..=0x1aff
        | 0x1dc0..=0x1dff
        | 0x20d0..=0x20ff
        | 0xfe00..=0xfe0f
        | 0xfe20..=0xfe2f => Script::Inherited,
        0x200c | 0x200d => Script::Inherited,
        0x370..=0x3ff | 0x1f00..=0x1fff => Script::Greek,
        0x400..=0x52f | 0x1c80..=0x1c8f | 0x2de0..=0x2dff | 0xa640..=0xa69f => Script::Cyrillic,
        0x530..=0x58f => Script::Armenian,
        0x590..=0x5ff | 0xfb1d..=0xfb4f => Script::Hebrew,
        0x64b..=0x655 | 0x670 => Script::Inherited,
        0x60c | 0x61b | 0x61f | 0x640 | 0x660..=0x669 => Script::Common,
        0x600..=0x6ff | 0x750..=0x77f | 0x8a0..=0x8ff | 0xfb50..=0xfdff | 0xfe70..=0xfeff => {
            Script::Arabic
        }
        0x951..=0x954 | 0x1cd0..=0x1cf9 => Script::Inherited,
        0x964 | 0x965 => Script::Common,
        0x900..=0x97f | 0xa8e0..=0xa8ff => Script::Brahmic(0x900),
        0x980..=0xdff => Script::Brahmic(u & !0x7f),
        0xe00..=0xfff => Script::Brahmic(u & !0x7f),
        0x1000..=0x109f => Script::Brahmic(0x1000),
        0x1100..=0x11ff | 0x3130..=0x318f | 0xac00..=0xd7af => Script::Hangul,
        0x3005 | 0x3007 | 0x3021..=0x3029 | 0x3038..=0x303b => Script::Han,
        0x3040..=0x30ff | 0x31f0..=0x31ff | 0xff66..=0xff9f => Script::Han,
        0x3400..=0x4dbf | 0x4e00..=0x9fff | 0xf900..=0xfaff | 0x20000..=0x3ffff => Script::Han,
        0x2000..=0x2bff
        | 0x3000..=0x303f
        | 0xfe30..=0xfe6f
        | 0xff00..=0xffef
        | 0x1f000..=0x1faff => Script::Common,
        _ => Script::Other(u >> 7),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(script('a'), Script::Latin);
        assert_eq!(script('ñ'), Script::Latin);
        assert_eq!(script('.'), Script::Common);
        assert_eq!(script('5'), Script::Common);
        assert_eq!(script('क'), Script::Brahmic(0x900));
        assert_eq!(script('।'), Script::Common);
        assert_eq!(script('\u{301}'), Script::Inherited);
        assert_eq!(script('カ'), Script::Han);
    }
}
