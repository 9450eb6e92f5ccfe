//! TLS to a server (`rediss://`): the settings ([`TlsOptions`]), built once into a client
//! configuration ([`Tls`]), and the handshake over a dialled TCP connection.
//!
//! Certificates are verified by default: against the CA file given, otherwise against the
//! system's roots (so that a managed service's public certificate is accepted as it is). The
//! name checked is the server-name override or the host dialled; an IP address is sent as no
//! SNI and matched against the certificate's IP addresses. `insecure` accepts any certificate
//! (the handshake's signatures are still checked, so the session is encrypted, only not to a
//! server known to be the right one).
//!
//! A `rediss://` URL parsed without explicit settings takes the process's default
//! ([`set_default`]): the binary installs what its `--tls-*` flags say once, so that every
//! connection it makes (the source, a restore's target) uses the same settings.

use std::fmt;
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// What TLS to a server is made with: the `--tls-*` flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the certificates to trust; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// PEM file of the client's certificate chain (with `key`), for a server that asks for one.
    pub cert: Option<PathBuf>,
    /// PEM file of the client's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// The name to send (SNI) and to verify the certificate against, instead of the host dialled.
    pub server_name: Option<String>,
    /// Accept any certificate: no verification at all.
    pub insecure: bool,
}

impl TlsOptions {
    /// Whether anything differs from the defaults (plain `rediss://`).
    pub fn is_set(&self) -> bool {
        *self != TlsOptions::default()
    }
}

/// Which setting an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsPart {
    Ca,
    Cert,
    Key,
    ServerName,
    /// The system's root certificates.
    SystemRoots,
}

/// A TLS setting that cannot be used: which, the file (if any), and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}{what}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
pub struct TlsError {
    pub part: TlsPart,
    pub file: Option<PathBuf>,
    pub what: String,
}

impl TlsError {
    fn file(part: TlsPart, file: &Path, what: impl Into<String>) -> TlsError {
        TlsError {
            part,
            file: Some(file.to_path_buf()),
            what: what.into(),
        }
    }
}

/// TLS settings built into a client configuration, shared by every connection that uses them.
pub struct Tls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    insecure: bool,
    /// What is trusted, for messages: `CA file ca.pem`, `the system's roots`, `nothing`.
    trust: String,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("trust", &self.trust)
            .field("server_name", &self.server_name)
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// The crypto provider: ring (the only one this crate asks rustls for; another dependency may
/// enable a second, so it is always named).
fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

impl Tls {
    /// Reads the files `opts` names and builds the configuration. The error names the file and
    /// what is wrong with it.
    pub fn new(opts: &TlsOptions) -> Result<Tls, TlsError> {
        let server_name = match &opts.server_name {
            None => None,
            Some(n) => Some(ServerName::try_from(n.clone()).map_err(|e| TlsError {
                part: TlsPart::ServerName,
                file: None,
                what: format!("{n:?} is not a DNS name or an IP address: {e}"),
            })?),
        };
        let client_auth = match (&opts.cert, &opts.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((read_certs(TlsPart::Cert, cert)?, read_key(key)?)),
            (Some(_), None) => {
                return Err(TlsError {
                    part: TlsPart::Key,
                    file: None,
                    what: "a client certificate needs its key (both or neither)".into(),
                })
            }
            (None, Some(_)) => {
                return Err(TlsError {
                    part: TlsPart::Cert,
                    file: None,
                    what: "a client key needs its certificate (both or neither)".into(),
                })
            }
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError {
                part: TlsPart::Ca,
                file: None,
                what: format!("no protocol version: {e}"),
            })?;
        let (builder, trust) = if opts.insecure {
            let verifier = Arc::new(AcceptAny(provider()));
            (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier),
                "any certificate (insecure)".to_string(),
            )
        } else {
            let (roots, trust) = match &opts.ca {
                Some(ca) => (ca_roots(ca)?, format!("CA file {}", ca.display())),
                None => (system_roots()?, "the system's roots".to_string()),
            };
            (builder.with_root_certificates(roots), trust)
        };
        let config = match client_auth {
            None => builder.with_no_client_auth(),
            Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(|e| {
                TlsError::file(
                    TlsPart::Key,
                    opts.key.as_deref().unwrap_or(Path::new("")),
                    format!(
                        "cannot be used with the certificate in {}: {e}",
                        opts.cert.as_deref().unwrap_or(Path::new("")).display()
                    ),
                )
            })?,
        };
        Ok(Tls {
            config: Arc::new(config),
            server_name,
            insecure: opts.insecure,
            trust,
        })
    }

    /// Whether certificates go unverified.
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// The rustls configuration every connection with these settings shares.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// The name verified for a connection to `host`: the override, or `host` itself.
    pub fn server_name(&self, host: &str) -> std::io::Result<ServerName<'static>> {
        if let Some(n) = &self.server_name {
            return Ok(n.clone());
        }
        ServerName::try_from(host.to_string()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("TLS: {host:?} is not a valid server name ({e}): give one with --tls-server-name"),
            )
        })
    }
}

/// The settings a `rediss://` URL parsed without explicit ones takes: what [`set_default`]
/// installed, otherwise the system's roots with no client certificate. `Err` when there are no
/// system roots (then only a CA file helps).
pub fn default_tls() -> Result<Arc<Tls>, String> {
    if let Some(t) = DEFAULT.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        return Ok(t.clone());
    }
    static SYSTEM: OnceLock<Result<Arc<Tls>, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            Tls::new(&TlsOptions::default())
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
}

static DEFAULT: RwLock<Option<Arc<Tls>>> = RwLock::new(None);

/// Makes `tls` what every `rediss://` URL parsed from now on connects with (see
/// [`default_tls`]). The binary calls it once, from its flags.
pub fn set_default(tls: Arc<Tls>) {
    *DEFAULT.write().unwrap_or_else(|p| p.into_inner()) = Some(tls);
}

/// What one read of a TLS connection's socket takes at most (see [`handshake`]).
const TLS_READ_BUFFER: usize = 64 << 10;

/// The TLS handshake over `tcp` (dialled to `host`) by `deadline`: verified as `tls` says,
/// with SNI the server-name override or `host` (none for an IP address). A failed
/// verification's error says what is wrong with the certificate and what was trusted.
pub async fn handshake(
    tcp: TcpStream,
    host: &str,
    tls: &Tls,
    deadline: Instant,
) -> std::io::Result<ClientTls> {
    let name = tls.server_name(host)?;
    let shown = name.to_str().into_owned();
    let connector = TlsConnector::from(tls.config.clone());
    // rustls reads the socket 4 KiB at a time: a bulk stream (a replica link, a restore's
    // replies) would cost a system call per 4 KiB. The buffer beneath it reads TLS_READ_BUFFER.
    let tcp = BufReader::with_capacity(TLS_READ_BUFFER, tcp);
    match tokio::time::timeout_at(deadline, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(ClientTls::new(s)),
        Ok(Err(e)) => Err(handshake_error(e, &shown, tls)),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no TLS handshake with {shown} in time"),
        )),
    }
}

/// The handshake's error, with what was verified against and a hint for the usual causes.
fn handshake_error(e: std::io::Error, name: &str, tls: &Tls) -> std::io::Error {
    use rustls::CertificateError as C;
    let hint = match e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            C::UnknownIssuer => format!(
                ": the server's certificate is not issued by a CA trusted here ({}): give its CA with --tls-ca",
                tls.trust
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                ": the server's certificate is not valid for {name:?}: dial the name it holds or give it with --tls-server-name"
            ),
            C::Expired | C::ExpiredContext { .. } => ": the server's certificate has expired".into(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    let e = explain(e);
    std::io::Error::new(
        e.kind(),
        format!("TLS handshake (server name {name:?}): {e}{hint}"),
    )
}

/// A TLS connection to a server: the stream, whose errors say what an alert from the server
/// most likely means. With TLS 1.3 a server that refuses the client's certificate (or its
/// absence) says so only after the handshake, on the first read.
///
/// A read takes every record that has arrived, as far as the caller's buffer goes: tokio-rustls
/// gives one record (at most 16 KiB) per read, and a bulk reader (the replica link) would
/// otherwise pay its per-read costs for every 16 KiB.
pub struct ClientTls {
    inner: TlsStream<BufReader<TcpStream>>,
    /// An error met after a read had already taken some bytes: the next read returns it.
    deferred: Option<std::io::Error>,
}

impl ClientTls {
    fn new(inner: TlsStream<BufReader<TcpStream>>) -> ClientTls {
        ClientTls {
            inner,
            deferred: None,
        }
    }

    pub fn get_ref(&self) -> &TlsStream<BufReader<TcpStream>> {
        &self.inner
    }
}

fn explain(e: std::io::Error) -> std::io::Error {
    use rustls::AlertDescription as A;
    let alert = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(a)) => *a,
        _ => return e,
    };
    let hint = match alert {
        A::CertificateRequired => "the server requires a client certificate (--tls-cert and --tls-key)",
        A::BadCertificate | A::UnknownCA | A::UnsupportedCertificate | A::CertificateUnknown => {
            "the server refused the client certificate (--tls-cert): is it issued by a CA the server trusts?"
        }
        A::CertificateExpired => "the server refused the client certificate: it has expired",
        _ => return e,
    };
    std::io::Error::new(e.kind(), format!("{e}: {hint}"))
}

impl AsyncRead for ClientTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(e) = this.deferred.take() {
            return Poll::Ready(Err(e));
        }
        let start = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other.map_err(explain),
        }
        // More records while they come without waiting (none: end of stream, said next time).
        while buf.remaining() > 0 && buf.filled().len() > start {
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() > before => {}
                Poll::Ready(Ok(())) | Poll::Pending => break,
                Poll::Ready(Err(e)) => {
                    this.deferred = Some(explain(e));
                    break;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner)
            .poll_write(cx, buf)
            .map_err(explain)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner)
            .poll_write_vectored(cx, bufs)
            .map_err(explain)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(explain)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx).map_err(explain)
    }
}

fn read_certs(part: TlsPart, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::file(part, path, pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::file(part, path, pem_error(e)))?;
    if certs.is_empty() {
        return Err(TlsError::file(
            part,
            path,
            "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::file(TlsPart::Key, path, pem_error(e)))
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(e) => e.to_string(),
        E::NoItemsFound => "nothing of the expected kind in it (a PEM file?)".into(),
        e => format!("not valid PEM: {e:?}"),
    }
}

fn ca_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, c) in read_certs(TlsPart::Ca, path)?.into_iter().enumerate() {
        roots.add(c).map_err(|e| {
            TlsError::file(TlsPart::Ca, path, format!("certificate {}: {e}", i + 1))
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(TlsError {
            part: TlsPart::SystemRoots,
            file: None,
            what: format!(
                "no usable root certificates found on this system{why}: give the server's CA with --tls-ca"
            ),
        });
    }
    Ok(roots)
}

/// Accepts any server certificate; still checks the handshake's signatures with it.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
