//! A local SMTP sink for testing the SMTP transport: accepts mail on `127.0.0.1`, port 0, and
//! keeps every message in memory.
//!
//! It speaks a minimal but correct subset of RFC 5321: greeting, `EHLO`/`HELO`, `MAIL FROM`,
//! `RCPT TO`, `DATA` (with dot-unstuffing), `RSET`, `NOOP`, `QUIT`; anything else gets `502`.
//! No `STARTTLS`, no `AUTH`. [`SmtpSink::fail_next`] makes the next transactions fail with a
//! transient error at the end of `DATA`, for retry tests; [`SmtpSink::refuse`] makes `RCPT TO`
//! answer `550 5.1.1` for an address, as a server does for a mailbox that doesn't exist.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Largest message accepted (advertised with the `SIZE` extension).
const MAX_SIZE: usize = 10 * 1024 * 1024;
/// Longest command line accepted, CRLF included (RFC 5321 §4.5.3.1.4 says 512; be lenient).
const MAX_COMMAND_LINE: usize = 4096;
/// Longest text line accepted inside `DATA` (RFC 5321 §4.5.3.1.6 says 1000).
const MAX_TEXT_LINE: usize = 64 * 1024;

/// One message accepted by the sink.
#[derive(Clone, Debug)]
pub struct ReceivedMail {
    /// The reverse-path without angle brackets (empty for the null sender `<>`).
    pub mail_from: String,
    /// The forward-paths without angle brackets, in order.
    pub rcpt_to: Vec<String>,
    /// The message as sent (dot-unstuffed), without the terminating `.\r\n`.
    pub data: String,
}

impl ReceivedMail {
    /// The message's MIME structure.
    pub fn mime(&self) -> crate::mime::Part {
        crate::mime::Part::parse(&self.data)
    }

    /// The files the message carries (`Content-Disposition: attachment` parts, decoded).
    pub fn attachments(&self) -> Vec<crate::mime::Attachment> {
        self.mime().attachments()
    }
}

/// A running SMTP sink; the server (and any open connection) stops when this is dropped.
pub struct SmtpSink {
    addr: SocketAddr,
    state: Arc<Shared>,
    count: watch::Receiver<usize>,
    task: JoinHandle<()>,
}

struct Shared {
    inner: Mutex<Inner>,
    count: watch::Sender<usize>,
}

struct Inner {
    messages: Vec<ReceivedMail>,
    fail_next: usize,
    refused: Vec<String>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SmtpSink {
    /// Starts a sink on `127.0.0.1`, port 0.
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind SMTP sink");
        let addr = listener.local_addr().expect("local addr");
        let (count_tx, count) = watch::channel(0);
        let state = Arc::new(Shared {
            inner: Mutex::new(Inner { messages: Vec::new(), fail_next: 0, refused: Vec::new() }),
            count: count_tx,
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the accept loop closes them too.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            connections.spawn(session(stream, shared.clone()));
                        }
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        SmtpSink { addr, state, count, task }
    }

    /// Where the sink listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.state.lock().messages.clone()
    }

    /// Waits until at least `n` messages have been accepted and returns them all; panics
    /// after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let mut count = self.count.clone();
        match tokio::time::timeout(timeout, count.wait_for(|c| *c >= n)).await {
            Ok(Ok(_)) => self.messages(),
            _ => {
                panic!("SMTP sink: expected at least {n} message(s) within {timeout:?}, got {}", self.messages().len())
            }
        }
    }

    /// `RCPT TO:<address>` gets `550 5.1.1` from now on (compared without case).
    pub fn refuse(&self, address: &str) {
        self.state.lock().refused.push(address.to_ascii_lowercase());
    }

    /// The next `n` transactions get `451 4.3.0 temporary failure` at the end of `DATA`.
    pub fn fail_next(&self, n: usize) {
        self.state.lock().fail_next = n;
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one line (up to and including `\n`) into `buf`. Returns `Ok(false)` at end of
/// stream, and an error for a line longer than `max`.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<bool> {
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(!buf.is_empty());
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            return Ok(true);
        }
        if buf.len() > max {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "line too long"));
        }
    }
}

/// Extracts the path from `<path>` followed by optional ESMTP parameters.
fn parse_path(arg: &str) -> Option<(String, &str)> {
    let arg = arg.trim_start();
    let rest = arg.strip_prefix('<')?;
    let end = rest.find('>')?;
    let path = &rest[..end];
    if path.contains(['<', ' ']) {
        return None;
    }
    // Drop a source route (RFC 5321 §4.1.2 says accept and ignore it).
    let path = match path.split_once(':') {
        Some((route, mailbox)) if route.starts_with('@') => mailbox,
        _ => path,
    };
    Some((path.to_owned(), rest[end + 1..].trim()))
}

/// Splits `FROM:<...>` / `TO:<...>` after the verb; `keyword` is `FROM` or `TO`.
fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let (k, rest) = arg.split_once(':')?;
    k.trim().eq_ignore_ascii_case(keyword).then_some(rest)
}

async fn reply<W: AsyncWrite + Unpin>(w: &mut W, text: &str) -> std::io::Result<()> {
    w.write_all(text.as_bytes()).await?;
    w.flush().await
}

async fn session(stream: TcpStream, state: Arc<Shared>) {
    let _ = run_session(stream, &state).await;
}

async fn run_session(stream: TcpStream, state: &Shared) -> std::io::Result<()> {
    let (read, mut w) = stream.into_split();
    let mut r = BufReader::new(read);
    let mut line = Vec::new();
    let mut greeted = false;
    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();

    reply(&mut w, "220 127.0.0.1 ESMTP clientflow test sink ready\r\n").await?;
    loop {
        match read_line(&mut r, &mut line, MAX_COMMAND_LINE).await {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                reply(&mut w, "500 5.5.2 line too long\r\n").await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = match text.split_once(' ') {
            Some((v, a)) => (v, a),
            None => (text, ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if arg.trim().is_empty() => {
                reply(&mut w, "501 5.5.4 domain or address required\r\n").await?;
            }
            "EHLO" => {
                greeted = true;
                mail_from = None;
                rcpt_to.clear();
                let text = format!("250-127.0.0.1 greets {}\r\n250-8BITMIME\r\n250 SIZE {MAX_SIZE}\r\n", arg.trim());
                reply(&mut w, &text).await?;
            }
            "HELO" => {
                greeted = true;
                mail_from = None;
                rcpt_to.clear();
                reply(&mut w, "250 127.0.0.1\r\n").await?;
            }
            "MAIL" => {
                if !greeted {
                    reply(&mut w, "503 5.5.1 send EHLO or HELO first\r\n").await?;
                } else if mail_from.is_some() {
                    reply(&mut w, "503 5.5.1 nested MAIL command\r\n").await?;
                } else {
                    match strip_keyword(arg, "FROM").and_then(parse_path) {
                        None => reply(&mut w, "501 5.5.4 syntax: MAIL FROM:<address>\r\n").await?,
                        Some((path, params)) => {
                            let too_big = params.split_ascii_whitespace().any(|p| {
                                p.split_once('=').is_some_and(|(k, v)| {
                                    k.eq_ignore_ascii_case("SIZE") && v.parse::<usize>().map_or(true, |s| s > MAX_SIZE)
                                })
                            });
                            if too_big {
                                reply(&mut w, "552 5.3.4 message size exceeds limit\r\n").await?;
                            } else {
                                mail_from = Some(path);
                                reply(&mut w, "250 2.1.0 OK\r\n").await?;
                            }
                        }
                    }
                }
            }
            "RCPT" => {
                if mail_from.is_none() {
                    reply(&mut w, "503 5.5.1 need MAIL before RCPT\r\n").await?;
                } else {
                    match strip_keyword(arg, "TO").and_then(parse_path) {
                        Some((path, _)) if state.lock().refused.contains(&path.to_ascii_lowercase()) => {
                            reply(&mut w, "550 5.1.1 mailbox unavailable\r\n").await?;
                        }
                        Some((path, _)) if !path.is_empty() => {
                            rcpt_to.push(path);
                            reply(&mut w, "250 2.1.5 OK\r\n").await?;
                        }
                        _ => reply(&mut w, "501 5.5.4 syntax: RCPT TO:<address>\r\n").await?,
                    }
                }
            }
            "DATA" => {
                if !arg.is_empty() {
                    reply(&mut w, "501 5.5.4 DATA takes no arguments\r\n").await?;
                    continue;
                }
                let Some(from) = mail_from.take() else {
                    reply(&mut w, "503 5.5.1 need MAIL command\r\n").await?;
                    continue;
                };
                if rcpt_to.is_empty() {
                    mail_from = Some(from);
                    reply(&mut w, "554 5.5.1 no valid recipients\r\n").await?;
                    continue;
                }
                reply(&mut w, "354 start mail input; end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = Vec::new();
                loop {
                    if !read_line(&mut r, &mut line, MAX_TEXT_LINE).await? {
                        return Ok(()); // Connection closed mid-message: discard it.
                    }
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
                    if data.len() <= MAX_SIZE {
                        data.extend_from_slice(unstuffed);
                    }
                }
                let rcpts = std::mem::take(&mut rcpt_to);
                if data.len() > MAX_SIZE {
                    reply(&mut w, "552 5.3.4 message size exceeds limit\r\n").await?;
                    continue;
                }
                let fail = {
                    let mut inner = state.lock();
                    if inner.fail_next > 0 {
                        inner.fail_next -= 1;
                        true
                    } else {
                        inner.messages.push(ReceivedMail {
                            mail_from: from,
                            rcpt_to: rcpts,
                            data: String::from_utf8_lossy(&data).into_owned(),
                        });
                        let n = inner.messages.len();
                        state.count.send_replace(n);
                        false
                    }
                };
                if fail {
                    reply(&mut w, "451 4.3.0 temporary failure\r\n").await?;
                } else {
                    reply(&mut w, "250 2.0.0 OK queued\r\n").await?;
                }
            }
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                reply(&mut w, "250 2.0.0 OK\r\n").await?;
            }
            "NOOP" => reply(&mut w, "250 2.0.0 OK\r\n").await?,
            "QUIT" => {
                reply(&mut w, "221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            "" => reply(&mut w, "500 5.5.2 syntax error\r\n").await?,
            _ => reply(&mut w, "502 5.5.1 command not implemented\r\n").await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lettre::message::Mailbox;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    fn transport(sink: &SmtpSink) -> AsyncSmtpTransport<Tokio1Executor> {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1").port(sink.addr().port()).build()
    }

    fn message(subject: &str, body: &str) -> Message {
        Message::builder()
            .from("ClientFlow <noreply@clientflow.test>".parse::<Mailbox>().expect("from"))
            .to("ada@example.com".parse::<Mailbox>().expect("to"))
            .cc("bob@example.com".parse::<Mailbox>().expect("cc"))
            .subject(subject)
            .body(body.to_owned())
            .expect("message")
    }

    #[tokio::test]
    async fn lettre_delivers_to_the_sink() {
        let sink = SmtpSink::start().await;
        let body = "Hello Ada,\r\n.leading dot must survive\r\n..two dots\r\nbye\r\n";
        transport(&sink).send(message("Welcome to ClientFlow", body)).await.expect("send");
        let mails = sink.wait_for(1, Duration::from_secs(5)).await;
        assert_eq!(mails.len(), 1);
        let mail = &mails[0];
        assert_eq!(mail.mail_from, "noreply@clientflow.test");
        assert_eq!(mail.rcpt_to, ["ada@example.com", "bob@example.com"]);
        assert!(mail.data.contains("Subject: Welcome to ClientFlow\r\n"), "{}", mail.data);
        assert!(mail.data.contains("\r\n.leading dot must survive\r\n..two dots\r\nbye"), "{}", mail.data);
        assert!(mail.data.ends_with("\r\n"));
        assert!(!mail.data.ends_with(".\r\n"));
    }

    #[tokio::test]
    async fn fail_next_is_a_transient_error_for_lettre() {
        let sink = SmtpSink::start().await;
        sink.fail_next(1);
        let mailer = transport(&sink);
        let err = mailer.send(message("first", "try 1\r\n")).await.expect_err("the first attempt fails");
        assert!(err.is_transient(), "{err:?}");
        assert!(sink.messages().is_empty());
        mailer.send(message("second", "try 2\r\n")).await.expect("the retry succeeds");
        let mails = sink.wait_for(1, Duration::from_secs(5)).await;
        assert!(mails[0].data.contains("Subject: second"));
    }

    #[tokio::test]
    async fn wait_for_panics_on_timeout() {
        let sink = SmtpSink::start().await;
        let handle = tokio::spawn(async move {
            sink.wait_for(1, Duration::from_millis(50)).await;
        });
        let err = handle.await.expect_err("wait_for panics");
        assert!(err.is_panic());
    }

    struct Client {
        r: BufReader<tokio::net::tcp::OwnedReadHalf>,
        w: tokio::net::tcp::OwnedWriteHalf,
    }

    impl Client {
        async fn connect(sink: &SmtpSink) -> Client {
            let (r, w) = TcpStream::connect(sink.addr()).await.expect("connect").into_split();
            let mut c = Client { r: BufReader::new(r), w };
            assert!(c.reply().await.starts_with("220 "));
            c
        }

        /// Reads one (possibly multi-line) reply.
        async fn reply(&mut self) -> String {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                self.r.read_line(&mut line).await.expect("read");
                assert!(line.ends_with("\r\n"), "{line:?}");
                all.push_str(&line);
                if line.as_bytes().get(3) != Some(&b'-') {
                    return all;
                }
            }
        }

        async fn cmd(&mut self, line: &str) -> String {
            self.w.write_all(format!("{line}\r\n").as_bytes()).await.expect("write");
            self.reply().await
        }
    }

    #[tokio::test]
    async fn speaks_rfc_5321_on_concurrent_connections() {
        let sink = SmtpSink::start().await;
        let mut a = Client::connect(&sink).await;
        let mut b = Client::connect(&sink).await;

        assert!(a.cmd("MAIL FROM:<x@y>").await.starts_with("503 "));
        let ehlo = a.cmd("EHLO client.test").await;
        assert!(ehlo.starts_with("250-"), "{ehlo}");
        assert!(ehlo.contains("8BITMIME") && ehlo.contains("SIZE"), "{ehlo}");
        assert!(!ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"), "{ehlo}");
        assert!(b.cmd("helo other.test").await.starts_with("250 "));

        assert!(a.cmd("STARTTLS").await.starts_with("502 "));
        assert!(a.cmd("AUTH PLAIN AGFiYwA=").await.starts_with("502 "));
        assert!(a.cmd("NOOP").await.starts_with("250 "));
        assert!(a.cmd("RCPT TO:<r@example.com>").await.starts_with("503 "));
        assert!(a.cmd("DATA").await.starts_with("503 "));
        assert!(a.cmd("MAIL FROM:no-brackets").await.starts_with("501 "));
        assert!(a.cmd("MAIL FROM:<a@example.com> BODY=8BITMIME SIZE=100").await.starts_with("250 "));
        assert!(a.cmd("RCPT TO:<r1@example.com>").await.starts_with("250 "));

        // Interleave a whole transaction on the other connection.
        assert!(b.cmd("MAIL FROM:<>").await.starts_with("250 "));
        assert!(b.cmd("RCPT TO:<r3@example.com>").await.starts_with("250 "));
        assert!(b.cmd("DATA").await.starts_with("354 "));
        assert!(b.cmd("Subject: b\r\n\r\n..x\r\n.").await.starts_with("250 "));

        assert!(a.cmd("rcpt to:<r2@example.com>").await.starts_with("250 "));
        assert!(a.cmd("DATA").await.starts_with("354 "));
        assert!(a.cmd("Subject: a\r\n\r\nbody\r\n.").await.starts_with("250 "));

        // RSET drops a transaction in progress.
        assert!(a.cmd("MAIL FROM:<c@example.com>").await.starts_with("250 "));
        assert!(a.cmd("RSET").await.starts_with("250 "));
        assert!(a.cmd("RCPT TO:<r@example.com>").await.starts_with("503 "));
        assert!(a.cmd("QUIT").await.starts_with("221 "));
        assert!(b.cmd("QUIT").await.starts_with("221 "));

        let mails = sink.wait_for(2, Duration::from_secs(5)).await;
        assert_eq!(mails.len(), 2);
        assert_eq!(mails[0].mail_from, "");
        assert_eq!(mails[0].rcpt_to, ["r3@example.com"]);
        assert_eq!(mails[0].data, "Subject: b\r\n\r\n.x\r\n");
        assert_eq!(mails[1].mail_from, "a@example.com");
        assert_eq!(mails[1].rcpt_to, ["r1@example.com", "r2@example.com"]);
        assert_eq!(mails[1].data, "Subject: a\r\n\r\nbody\r\n");
    }
}
