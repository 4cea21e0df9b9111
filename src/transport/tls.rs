//! Optional mutual TLS between nodes, for Raft traffic that leaves the machine. Every node has a
//! certificate signed by the cluster's CA; each side of a connection checks the other's against
//! that CA, and the dialer also checks that the certificate names the address it dialed.
//!
//! The files can be read again while the node runs (`reload`): new connections use the new
//! material, connections already open keep theirs until they reconnect, and files that do not
//! load leave the old material in place.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// Where a node's TLS material lives, all PEM.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This node's certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA (or CAs) that signed every member's certificate.
    pub ca: PathBuf,
}

/// A node's TLS configuration, both as listener and as dialer.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<Material>>,
}

/// What one reading of the files produced.
struct Material {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

/// A configuration problem, naming the setting it concerns.
#[derive(Debug)]
pub struct TlsConfigError {
    pub field: &'static str,
    pub message: String,
}

fn config_error(field: &'static str, path: &Path, what: impl std::fmt::Display) -> TlsConfigError {
    TlsConfigError {
        field,
        message: format!("{}: {what}", path.display()),
    }
}

/// The certificate and the key did not make a pair: a certificate that does not parse is the
/// certificate file's fault; a key that does not parse, or is not the certificate's, the key's.
fn pair_error(files: &TlsFiles, e: rustls::Error) -> TlsConfigError {
    match e {
        rustls::Error::InvalidCertificate(_) => config_error("tls.certFile", &files.cert, e),
        other => config_error("tls.keyFile", &files.key, other),
    }
}

/// Every certificate in a PEM file; at least one.
fn read_certificates(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|e| config_error(field, path, e))?;
    if certs.is_empty() {
        return Err(config_error(field, path, "no certificate in it"));
    }
    Ok(certs)
}

impl Tls {
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsConfigError> {
        Ok(Tls {
            files: files.clone(),
            current: RwLock::new(Arc::new(Material::read(files)?)),
        })
    }

    /// Reads the files again; on success new connections use what they hold now. On failure
    /// nothing changes and the error names the file.
    pub fn reload(&self) -> Result<(), TlsConfigError> {
        let fresh = Arc::new(Material::read(&self.files)?);
        *crate::write_lock(&self.current) = fresh;
        Ok(())
    }

    fn material(&self) -> Arc<Material> {
        crate::read_lock(&self.current).clone()
    }

    pub async fn accept(&self, tcp: TcpStream) -> io::Result<PeerStream> {
        let acceptor = self.material().acceptor.clone();
        Ok(PeerStream::TlsServer(Box::new(acceptor.accept(tcp).await?)))
    }

    /// `host` is the address the peer is known by; its certificate must name it.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> io::Result<PeerStream> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let connector = self.material().connector.clone();
        Ok(PeerStream::TlsClient(Box::new(
            connector.connect(name, tcp).await?,
        )))
    }
}

impl Material {
    fn read(files: &TlsFiles) -> Result<Material, TlsConfigError> {
        let certs = read_certificates("tls.certFile", &files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| config_error("tls.keyFile", &files.key, e))?;
        let mut roots = RootCertStore::empty();
        for ca in read_certificates("tls.caFile", &files.ca)? {
            roots
                .add(ca)
                .map_err(|e| config_error("tls.caFile", &files.ca, e))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| config_error("tls.caFile", &files.ca, e))?;
        let server_config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error("tls.certFile", &files.cert, e))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| pair_error(files, e))?;
        let client_config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error("tls.certFile", &files.cert, e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| pair_error(files, e))?;
        Ok(Material {
            acceptor: TlsAcceptor::from(Arc::new(server_config)),
            connector: TlsConnector::from(Arc::new(client_config)),
        })
    }
}

/// A connection between nodes: plain TCP, or TLS from either side.
pub enum PeerStream {
    Plain(TcpStream),
    TlsServer(Box<server::TlsStream<TcpStream>>),
    TlsClient(Box<client::TlsStream<TcpStream>>),
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerStream::TlsServer(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            PeerStream::TlsClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerStream::TlsServer(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            PeerStream::TlsClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerStream::TlsServer(s) => Pin::new(s.as_mut()).poll_flush(cx),
            PeerStream::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PeerStream::TlsServer(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            PeerStream::TlsClient(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
