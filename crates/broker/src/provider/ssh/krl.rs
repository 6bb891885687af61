//! OpenSSH key revocation lists (PROTOCOL.krl), the subset Hourglass
//! writes: a header and, when anything is revoked, one certificate section
//! for one CA with one key id subsection.

pub const MAGIC: &[u8; 8] = b"SSHKRL\n\0";
pub const FORMAT_VERSION: u32 = 1;
pub const SECTION_CERTIFICATES: u8 = 1;
pub const CERT_SECTION_KEY_ID: u8 = 0x23;

/// The KRL revoking `key_ids` of certificates signed by the CA whose
/// public key blob is `ca_key`. Key ids are written in the order given.
pub fn encode(version: u64, generated_at: u64, comment: &str, ca_key: &[u8], key_ids: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&generated_at.to_be_bytes());
    out.extend_from_slice(&0u64.to_be_bytes()); // flags: none defined
    put_string(&mut out, b""); // reserved
    put_string(&mut out, comment.as_bytes());
    // A key id subsection must list at least one id: with nothing
    // revoked the KRL is the header alone.
    if !key_ids.is_empty() {
        let mut ids = Vec::new();
        for id in key_ids {
            put_string(&mut ids, id.as_bytes());
        }
        let mut section = Vec::new();
        put_string(&mut section, ca_key);
        put_string(&mut section, b""); // reserved
        section.push(CERT_SECTION_KEY_ID);
        put_string(&mut section, &ids);
        out.push(SECTION_CERTIFICATES);
        put_string(&mut out, &section);
    }
    out
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every string here is far below 4 GiB; saturate rather than wrap.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// What a KRL written by [`encode`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub version: u64,
    pub generated_at: u64,
    pub comment: String,
    /// (CA key blob, key id) pairs.
    pub revoked_key_ids: Vec<(Vec<u8>, String)>,
}

impl Decoded {
    pub fn lists(&self, ca_key: &[u8], key_id: &str) -> bool {
        self.revoked_key_ids.iter().any(|(ca, id)| ca == ca_key && id == key_id)
    }
}

/// Reads a KRL holding only certificate sections with key id
/// subsections; anything else is refused, since Hourglass writes
/// nothing else.
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let mut reader = Reader(bytes);
    if reader.take(8)? != MAGIC {
        return Err("not a KRL (bad magic)".into());
    }
    let format = reader.u32()?;
    if format != FORMAT_VERSION {
        return Err(format!("unsupported KRL format version {format}"));
    }
    let version = reader.u64()?;
    let generated_at = reader.u64()?;
    let _flags = reader.u64()?;
    let _reserved = reader.string()?;
    let comment = String::from_utf8(reader.string()?.to_vec()).map_err(|_| "comment is not UTF-8")?;
    let mut revoked_key_ids = Vec::new();
    while !reader.0.is_empty() {
        let kind = reader.byte()?;
        let mut section = Reader(reader.string()?);
        if kind != SECTION_CERTIFICATES {
            return Err(format!("unexpected KRL section type {kind}"));
        }
        let ca = section.string()?.to_vec();
        let _reserved = section.string()?;
        while !section.0.is_empty() {
            let sub = section.byte()?;
            let mut data = Reader(section.string()?);
            if sub != CERT_SECTION_KEY_ID {
                return Err(format!("unexpected certificate subsection type {sub:#x}"));
            }
            while !data.0.is_empty() {
                let id = String::from_utf8(data.string()?.to_vec()).map_err(|_| "key id is not UTF-8")?;
                revoked_key_ids.push((ca.clone(), id));
            }
        }
    }
    Ok(Decoded { version, generated_at, comment, revoked_key_ids })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(bytes))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(bytes))
    }

    fn string(&mut self) -> Result<&'a [u8], String> {
        let len = usize::try_from(self.u32()?).map_err(|_| "length overflows")?;
        self.take(len)
    }
}
