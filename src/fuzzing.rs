//! The fuzz targets: one function per decoder of untrusted bytes or parser
//! of untrusted text, each taking arbitrary bytes. None may panic, whatever
//! it is given, and each asserts what must hold of what it decoded where
//! that is cheap to check (a value written back reads back the same, a
//! segment fits its MTU, a stream yields the records it was fed and no
//! more).
//!
//! The bodies live here, in the library, so that two drivers share them:
//! `fuzz/` (cargo-fuzz on nightly, `scripts/fuzz.sh` runs every target
//! for a million inputs or more) calls each through its own binary, and
//! the unit test below, on stable, replays every input kept in
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` and then a
//! short seeded mutation pass: the short pass `cargo test` runs.
//!
//! Owns: the targets and their oracles. Must not touch: the host (no
//! sockets, files or processes: every target is sans-IO).
use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;

use crate::gui;
use crate::gui::http;
use crate::host::agent::{self, AgentError, AgentMsg};
use crate::host::mconsole::{self, AnswerText, McError, Part};
use crate::host::qmp::{self, QmpError, QmpMessage};
use crate::host::{guest, ExecOutput};
use crate::lab::capture::{self, PortEntry};
use crate::lab::command::Reply;
use crate::lab::control::{self, Action, Answer, Request};
use crate::lab::errors::ErrorKind;
use crate::lab::impairment::{self, OptValue};
use crate::lab::rebuild::{self, SavedLab};
use crate::switch::fabric::{Decision, Egress, Fabric, PortInfo, Segment};
use crate::switch::frame::{Frame, FrameError, VnetHdr, ETH_HDR_LEN, MAX_BUFFER_LEN, VNET_HDR_LEN};
use crate::switch::impair::Direction;
use crate::switch::port::{self, Deframer, Record};
use crate::switch::vlan::{self, Tagging};
use crate::switch::{gso, sniff, WireBuffers};
use crate::vocab::impair::{self as impair_values, Distribution, LinkImpairment};
use crate::vocab::{Mtu, VlanId, VlanMode};

/// A fuzz target's body: any bytes in, a panic on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus directory, its regressions
/// directory and its cargo-fuzz binary carry.
pub const TARGETS: &[(&str, Target)] = &[
    ("switch_frame", switch_frame),
    ("sniff_summary", sniff_summary),
    ("gso_segment", gso_segment),
    ("gro_merge", gro_merge),
    ("stream_deframer", stream_deframer),
    ("uml_bess_message", uml_bess_message),
    ("agent_line", agent_line),
    ("qmp_message", qmp_message),
    ("mconsole_reply", mconsole_reply),
    ("control_request", control_request),
    ("http_head", http_head),
    ("websocket_frames", websocket_frames),
    ("impairment_text", impairment_text),
    ("impairment_json", impairment_json),
    ("saved_lab", saved_lab),
    ("vde_request", vde_request),
    ("kathara_lab", kathara_lab),
    ("clab_topology", clab_topology),
    ("image_reference", image_reference),
    ("layer_blob", layer_blob),
    ("vxlan_datagram", vxlan_datagram),
];

/// A Kathará lab from an imported directory: `lab.conf`, then `lab.dep`
/// (the input split at its first NUL byte). Whatever the text, reading
/// it ends in a lab or an error at a line of the file; a lab's start
/// order holds each device once, after what it depends on, and its
/// script is Rhai that compiles (the lab's values in it are escaped
/// literals: see `import::rhai_str`).
pub fn kathara_lab(data: &[u8]) {
    use crate::import::kathara::{apply_lab_dep, parse_lab_conf};
    let text = String::from_utf8_lossy(data);
    let (conf, dep) = text.split_once('\0').unwrap_or((&text, ""));
    match parse_lab_conf("lab.conf", conf) {
        Err(e) => assert!(e.line.is_none_or(|l| l >= 1 && l <= conf.lines().count().max(1)), "{e}"),
        Ok(mut lab) => {
            let mut order = lab.order.clone();
            order.sort();
            let mut names: Vec<String> = lab.devices.iter().map(|d| d.name.clone()).collect();
            names.sort();
            assert_eq!(order, names);
            if apply_lab_dep(&mut lab, "lab.dep", dep).is_ok() {
                assert_eq!(lab.order.len(), lab.devices.len());
            }
            if let Ok(script) = lab.to_rhai(&crate::import::ImagePolicy::Host, ".") {
                rhai::Engine::new().compile(&script.script).expect("the script compiles");
            }
        }
    }
}

/// A containerlab topology from an imported file: any text is a lab or
/// an error at a line and column of it, never a panic; a lab's script
/// compiles.
pub fn clab_topology(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match crate::import::clab::parse("t.clab.yml", &text) {
        Err(e) => assert!(e.line.is_some() || e.message.contains("YAML reader"), "{e}"),
        Ok(lab) => {
            if let Ok(script) = lab.to_rhai(&crate::import::ImagePolicy::Host, ".") {
                rhai::Engine::new().compile(&script.script).expect("the script compiles");
            }
        }
    }
}

/// An image reference from a script or a lab file: parsed or refused,
/// and one that parses prints back to a reference that parses the same.
pub fn image_reference(data: &[u8]) {
    use crate::image::oci::ImageRef;
    let text = String::from_utf8_lossy(data);
    if let Ok(r) = text.parse::<ImageRef>() {
        let again: ImageRef = r.to_string().parse().expect("a printed reference parses");
        assert_eq!(again, r);
    }
}

/// A layer blob from a registry or an archive (gzip, zstd in any number
/// of frames, or a plain tar): decoding and walking it ends in entries or
/// an error, never a panic, within a bounded size.
pub fn layer_blob(data: &[u8]) {
    let _ = crate::image::oci::walk_layer(data, 1 << 20);
}

/// A UDP datagram at a vxlan endpoint's port, from anyone: it is a frame
/// of the tunnel (the I flag, its VNI, room for an Ethernet header) or
/// refused, and a header clonet writes is always taken back.
pub fn vxlan_datagram(data: &[u8]) {
    use crate::switch::vxlan::{check, header, Refusal, VXLAN_HDR_LEN};
    let vni = data.get(..3).map_or(42, |b| u32::from_be_bytes([0, b[0], b[1], b[2]]));
    match check(data, vni) {
        Ok(()) => assert!(data.len() >= VXLAN_HDR_LEN + 14 && data[0] & 0x08 != 0),
        Err(Refusal::Short) => assert!(data.len() < VXLAN_HDR_LEN + 14),
        Err(Refusal::NoVni) => assert!(data[0] & 0x08 == 0),
        Err(Refusal::OtherVni(got)) => assert!(got != vni && got <= 0x00FF_FFFF),
    }
    let mut ours = header(vni).to_vec();
    ours.extend_from_slice(data.get(..14).unwrap_or(&[0; 14]));
    if ours.len() >= VXLAN_HDR_LEN + 14 {
        assert_eq!(check(&ours, vni), Ok(()));
    }
}

/// At most what a port hands the switch in one buffer.
fn switch_buffer(data: &[u8]) -> &[u8] {
    &data[..data.len().min(MAX_BUFFER_LEN)]
}

fn vid(id: u16) -> VlanId {
    VlanId::new(id).expect("a VLAN id in range")
}

/// A switch buffer (virtio-net header, then the frame) as a port hands it
/// over: parsed, classified into a VLAN at the ingress of a LAN with
/// access and trunk ports (and of a point-to-point link), admitted to
/// each egress port, tagged or untagged, or cut in software for ports
/// without offloads, exactly as the data plane does between its reads
/// and its writes.
pub fn switch_frame(data: &[u8]) {
    let buf = switch_buffer(data);
    let Ok(frame) = Frame::parse(buf) else { return };
    assert!(frame.l3_len() + ETH_HDR_LEN <= frame.eth.len(), "the L3 length leaves out at least the Ethernet header");
    let _ = (frame.dst(), frame.src(), frame.ethertype());
    let tag = vlan::tag_of(&frame);
    let mut fabric = Fabric::default();
    let (lan, link) = (0, 1);
    fabric.add_segment(lan, Segment::lan()).expect("a new segment");
    fabric.add_segment(link, Segment::point_to_point()).expect("a new segment");
    let port = |segment, vlan, mtu, gso, shaped| PortInfo { segment, mtu, gso, up: true, vlan, shaped };
    let ports = [
        port(lan, VlanMode::Access(VlanId::DEFAULT), 1500, true, false),
        port(lan, VlanMode::Trunk(vec![vid(10), vid(20)]), 9000, false, false),
        port(lan, VlanMode::Access(vid(10)), 1280, true, true),
        port(lan, VlanMode::Trunk(vec![VlanId::DEFAULT, vid(10)]), 65521, true, false),
        port(link, VlanMode::default(), 1500, true, false),
        port(link, VlanMode::default(), 576, false, false),
    ];
    for (id, info) in ports.iter().enumerate() {
        fabric.add_port(id, info.clone()).expect("a new port");
    }
    let mut wire = WireBuffers::default();
    for ingress in [0, 1, 3, 4] {
        let (targets, cls) = match fabric.decide(ingress, &frame, Duration::ZERO) {
            Decision::Unicast(to, cls) => (vec![to], cls),
            Decision::Flood(to, cls) => (to.iter().copied().filter(|p| *p != ingress).collect(), cls),
            Decision::Drop(_) | Decision::Nowhere => continue,
        };
        if let Some(cls) = cls {
            match &ports[ingress].vlan {
                VlanMode::Access(v) => assert!(tag.is_none() && cls.vid == v.get() && !cls.tagged),
                VlanMode::Trunk(_) => assert!(tag == Some(cls.vid) && cls.tagged),
            }
        }
        for egress in targets {
            match fabric.admit(egress, &frame, cls) {
                Egress::Send(tagging) => check_retag(buf, &frame, tagging),
                Egress::Soft { tagging, mtu } => {
                    if wire.cut(&frame, mtu, true).is_err() {
                        continue;
                    }
                    for piece in wire.frames() {
                        let cut = Frame::parse(piece).expect("a frame cut for the wire parses");
                        assert!(!cut.vnet.is_gso() && cut.vnet.flags == 0, "a cut frame needs no offload");
                        assert!(cut.l3_len() <= mtu, "a cut frame fits the port's MTU");
                        check_retag(piece, &cut, tagging);
                    }
                }
                Egress::NotMember | Egress::Drop(_) => {}
            }
        }
    }
}

/// A frame with its tag pushed or stripped holds what it held, the tag
/// added or left out.
fn check_retag(buf: &[u8], frame: &Frame<'_>, tagging: Tagging) {
    let (mut hdr, mut tag) = ([0u8; VNET_HDR_LEN], [0u8; 4]);
    let out = vlan::retag(buf, frame, tagging, &mut hdr, &mut tag);
    let bytes = out.parts().concat();
    assert_eq!(bytes.len(), VNET_HDR_LEN + out.eth_len);
    let eth = &bytes[VNET_HDR_LEN..];
    match tagging {
        Tagging::AsIs => assert_eq!(bytes, buf),
        Tagging::Push(vid) => {
            let pushed = Frame::parse(&bytes).expect("a pushed tag keeps a frame valid");
            assert_eq!(vlan::tag_of(&pushed), Some(vid));
            assert_eq!((&eth[..12], &eth[16..]), (&frame.eth[..12], &frame.eth[12..]));
            // The offsets move with the payload, and never wrap.
            let (before, after) = (&frame.vnet, &pushed.vnet);
            if before.flags & VnetHdr::F_NEEDS_CSUM != 0 {
                assert!(after.csum_start >= before.csum_start, "csum_start wrapped: {before:?} -> {after:?}");
            }
            assert!(after.hdr_len >= before.hdr_len, "hdr_len wrapped: {before:?} -> {after:?}");
        }
        Tagging::Strip => assert_eq!((&eth[..12], &eth[12..]), (&frame.eth[..12], &frame.eth[16..])),
    }
}

/// An Ethernet frame (no virtio-net header) summarized for live sniffing:
/// one line, starting with its addresses.
pub fn sniff_summary(data: &[u8]) {
    let line = sniff::summarize(data);
    assert!(!line.contains(['\n', '\r']), "a summary is one line: {line:?}");
    if data.len() < ETH_HDR_LEN {
        assert!(line.starts_with("runt frame"), "{line:?}");
    } else {
        let mac = |b: &[u8]| crate::vocab::MacAddr(b.try_into().expect("6 bytes")).to_string();
        assert!(line.starts_with(&format!("{} > {}", mac(&data[6..12]), mac(&data[0..6]))), "{line:?}");
    }
}

/// A TCP super-frame cut into segments for a port of the MTU the first
/// two bytes choose: each segment fits it, carries the headers with their
/// lengths and checksums right, and together they carry the payload,
/// in order, once.
pub fn gso_segment(data: &[u8]) {
    let Some((mtu, buf)) = data.split_first_chunk::<2>() else { return };
    let span = Mtu::MAX - Mtu::MIN + 1;
    let mtu = (Mtu::MIN + u32::from(u16::from_le_bytes(*mtu)) % span) as usize;
    let Ok(frame) = Frame::parse(switch_buffer(buf)) else { return };
    // A port without offloads also gets seeded checksums completed, at
    // whatever offsets the header gives.
    let _ = gso::complete_checksum(&frame.vnet, &mut frame.eth.to_vec());
    let mut segments = Vec::new();
    match gso::segment(&frame, mtu, &mut Vec::new(), |s| segments.push(s.to_vec())) {
        Ok(count) => {
            assert_eq!(count, segments.len());
            let headers = gso::header_len(frame.eth).expect("a segmented frame has TCP headers");
            let mut payload = Vec::new();
            for s in &segments {
                assert!(s[..VNET_HDR_LEN].iter().all(|b| *b == 0), "a segment needs no offload");
                let seg = Frame::parse(s).expect("a segment parses");
                assert!(seg.l3_len() <= mtu, "a segment of {} bytes fits the MTU {mtu}", seg.l3_len());
                assert_eq!(&seg.eth[..12], &frame.eth[..12], "the addresses stay");
                check_tcp_segment(seg.eth, headers);
                payload.extend_from_slice(&seg.eth[headers..]);
            }
            assert_eq!(payload, frame.eth[headers..], "the payload, in order, once");
        }
        Err(_) => assert!(segments.is_empty(), "a refused frame emits nothing"),
    }
}

/// Frames bound for a port that takes GSO frames, merged as the data
/// plane merges one turn's TCP segments (each frame after a 2-byte
/// little-endian length): a single frame leaves as it came; a merged one
/// parses, and cut again to the first segment's size it gives back the
/// segments it took, each with valid lengths and checksums, the payload
/// in order, once.
pub fn gro_merge(data: &[u8]) {
    use crate::switch::gro::Held;
    let mut frames = Vec::new();
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let n = (u16::from_le_bytes(*len) as usize).min(tail.len());
        frames.push(&tail[..n]);
        rest = &tail[n..];
        if frames.len() == 64 {
            break;
        }
    }
    let Some((first, more)) = frames.split_first() else { return };
    let Ok(mut held) = Held::start(first, Vec::new()) else { return };
    let headers = VNET_HDR_LEN + gso::header_len(&first[VNET_HDR_LEN..]).expect("a merged frame has TCP headers");
    let mut payload = first[headers..].to_vec();
    let mut taken = 1;
    for f in more {
        if held.merge(f) {
            assert_eq!(gso::header_len(&f[VNET_HDR_LEN..]).ok(), Some(headers - VNET_HDR_LEN), "same headers");
            payload.extend_from_slice(&f[headers..]);
            taken += 1;
        }
    }
    assert_eq!(held.segs, taken);
    let out = held.finish();
    if taken == 1 {
        assert_eq!(out, *first, "one segment leaves as it came");
        return;
    }
    let frame = Frame::parse(&out).expect("a merged frame parses");
    assert!(frame.vnet.is_gso(), "a merged frame is a GSO frame");
    let mtu = first.len() - VNET_HDR_LEN - ETH_HDR_LEN;
    let mut segments = Vec::new();
    gso::segment(&frame, mtu, &mut Vec::new(), |s| segments.push(s.to_vec())).expect("a merged frame cuts again");
    assert_eq!(segments.len() as u64, taken, "as many segments as it took");
    let mut again = Vec::new();
    for s in &segments {
        check_tcp_segment(&s[VNET_HDR_LEN..], headers - VNET_HDR_LEN);
        again.extend_from_slice(&s[headers..]);
    }
    assert_eq!(again, payload, "the payload, in order, once");
}

/// The IP length and checksums of one TCP segment (`headers` bytes of
/// headers, then its payload), recomputed independently of `gso`.
fn check_tcp_segment(eth: &[u8], headers: usize) {
    let l3 = if u16::from_be_bytes([eth[12], eth[13]]) == vlan::TPID { ETH_HDR_LEN + 4 } else { ETH_HDR_LEN };
    let v6 = u16::from_be_bytes([eth[l3 - 2], eth[l3 - 1]]) == 0x86dd;
    let l4 = if v6 { l3 + 40 } else { l3 + (eth[l3] & 0x0f) as usize * 4 };
    let tcp_len = eth.len() - l4;
    let mut pseudo = if v6 {
        assert_eq!(u16::from_be_bytes([eth[l3 + 4], eth[l3 + 5]]) as usize, tcp_len, "IPv6 payload length");
        gso::sum(&eth[l3 + 8..l3 + 40], 0)
    } else {
        assert_eq!(u16::from_be_bytes([eth[l3 + 2], eth[l3 + 3]]) as usize, eth.len() - l3, "IPv4 total length");
        assert_eq!(gso::finish(gso::sum(&eth[l3..l4], 0)), 0, "IPv4 header checksum");
        gso::sum(&eth[l3 + 12..l3 + 20], 0)
    };
    pseudo = gso::sum(&[0, 6], pseudo);
    pseudo = gso::sum(&(tcp_len as u32).to_be_bytes(), pseudo);
    assert_eq!(gso::finish(gso::sum(&eth[l4..], pseudo)), 0, "TCP checksum");
    assert!(headers <= eth.len());
}

/// QEMU's `-netdev stream` byte stream cut into frames: the first byte
/// sizes the deframer (small, so that short inputs reach its edges), the
/// second chooses how the rest arrives in reads. Whatever the reads, the
/// frames are the stream's records, in order, and nothing else, and the
/// stream stops being read at the first length no frame can have.
pub fn stream_deframer(data: &[u8]) {
    let Some(([size, reads], stream)) = data.split_first_chunk::<2>() else { return };
    let max_frame = ETH_HDR_LEN + *size as usize * 4;
    let mut expected = Vec::new();
    let mut expected_bad = None;
    let mut at = 0;
    while let Some(prefix) = stream.get(at..at + 4) {
        let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
        if !(ETH_HDR_LEN..=max_frame).contains(&len) {
            expected_bad = Some(len);
            break;
        }
        let Some(record) = stream.get(at + 4..at + 4 + len) else { break };
        expected.push(record.to_vec());
        at += 4 + len;
    }
    let mut deframer = Deframer::new(max_frame);
    let (mut fed, mut got, mut bad) = (0, Vec::new(), None);
    let mut schedule = crate::switch::impair::Rng::seeded(u64::from(*reads));
    loop {
        match deframer.next_record() {
            Record::Frame(range) => got.push(deframer.bytes()[range].to_vec()),
            Record::Bad(len) => {
                bad = Some(len);
                break;
            }
            Record::Incomplete if fed == stream.len() => break,
            Record::Incomplete => {
                let space = deframer.space();
                assert!(!space.is_empty(), "an incomplete record always leaves room to read into");
                let want = 1 + (schedule.next_u64() % 300) as usize;
                let n = want.min(space.len()).min(stream.len() - fed);
                space[..n].copy_from_slice(&stream[fed..fed + n]);
                deframer.filled(n);
                fed += n;
            }
        }
    }
    let yielded: usize = got.iter().map(Vec::len).sum();
    assert!(yielded <= fed, "{yielded} bytes of frames from {fed} bytes read");
    assert_eq!(got, expected, "the frames are the stream's records");
    assert_eq!(bad, expected_bad);
}

/// A message of UML's vector `bess` transport (one raw frame, no
/// virtio-net header) as a `RawPort` reads it into a switch buffer, then
/// sent back out as the switch writes to such a port, untouched, with a
/// tag pushed and with its tag stripped: the header never reaches UML,
/// the frame does, byte for byte.
pub fn uml_bess_message(data: &[u8]) {
    let message = &data[..data.len().min(MAX_BUFFER_LEN - VNET_HDR_LEN)];
    let mut buf = vec![0xa5u8; VNET_HDR_LEN + message.len()];
    buf[VNET_HDR_LEN..].copy_from_slice(message);
    let len = port::raw_message_to_buffer(&mut buf, message.len());
    if message.is_empty() {
        assert_eq!(len, 0, "an empty read means the peer is gone");
        return;
    }
    assert_eq!(len, buf.len());
    let frame = match Frame::parse(&buf) {
        Ok(f) => f,
        Err(e) => {
            assert!(e == FrameError::Runt && message.len() < ETH_HDR_LEN, "{e:?} for {} bytes", message.len());
            return;
        }
    };
    assert_eq!((frame.vnet, frame.eth), (VnetHdr::default(), message));
    let mut taggings = vec![Tagging::AsIs, Tagging::Push(4094)];
    if vlan::tag_of(&frame).is_some() {
        taggings.push(Tagging::Strip);
    }
    for tagging in taggings {
        let (mut hdr, mut tag) = ([0u8; VNET_HDR_LEN], [0u8; 4]);
        let out = vlan::retag(&buf, &frame, tagging, &mut hdr, &mut tag);
        let mut iov = [IoSlice::new(&[]); 8];
        let (count, total) = port::message_slices(out.parts(), VNET_HDR_LEN, &mut iov).expect("at most 4 parts");
        let sent: Vec<u8> = iov[..count].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!((sent.len(), total), (out.eth_len, out.eth_len));
        let expected = match tagging {
            Tagging::AsIs => message.to_vec(),
            Tagging::Push(v) => [&message[..12], &vlan::TPID.to_be_bytes(), &v.to_be_bytes(), &message[12..]].concat(),
            Tagging::Strip => [&message[..12], &message[16..]].concat(),
        };
        assert_eq!(sent, expected);
    }
}

/// What a POSIX shell makes of a word written by `agent::shell_quote`:
/// single quotes keep everything, a backslash keeps the next character,
/// the few plain characters stand for themselves. None for anything the
/// shell would treat specially.
fn shell_unquote(word: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    c => out.push(c),
                }
            },
            '\\' => out.push(chars.next()?),
            c if c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c) => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

/// Lines from a guest agent (a machine's serial line), and a guest's ping
/// output: a hello or a result reads back the same once written again as
/// the agent writes it, a refused line is quoted at most 80 characters
/// long, a round-trip time is a real duration. And the other way, a word
/// of a command line is quoted so that the guest's shell reads it back.
pub fn agent_line(data: &[u8]) {
    let _ = guest::ping_rtt(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    assert_eq!(shell_unquote(&agent::shell_quote(text)).as_deref(), Some(text), "{text:?} quoted");
    let field = |bytes: &[u8]| if bytes.is_empty() { "-".to_string() } else { B64.encode(bytes) };
    for line in text.split('\n') {
        match agent::parse_line(line.trim_end()) {
            Ok(AgentMsg::Hello { version }) => {
                let again = agent::parse_line(&format!("H clonet-agent {version}"));
                assert_eq!(again, Ok(AgentMsg::Hello { version }));
            }
            Ok(AgentMsg::Result { id, output }) => {
                let ExecOutput { status, stdout, stderr, truncated } = &output;
                let cut = u8::from(*truncated);
                let again = agent::parse_line(&format!("R {id} {status} {} {} {cut}", field(stdout), field(stderr)));
                assert_eq!(again, Ok(AgentMsg::Result { id, output: output.clone() }));
                let _ = guest::ping_rtt(stdout);
            }
            Err(AgentError::BadLine(quoted)) => assert!(quoted.chars().count() <= 80),
        }
    }
}

/// Lines QEMU sends on QMP: each is told apart as the greeting, an
/// answer, an error or an event, and what it carries is what the line
/// holds; anything else is a protocol error.
pub fn qmp_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for line in text.split('\n') {
        let line = line.trim_end();
        match qmp::parse_message(line) {
            Ok(message) => {
                let v: Value = serde_json::from_str(line).expect("a message is JSON");
                match message {
                    QmpMessage::Greeting => assert!(v.get("QMP").is_some()),
                    QmpMessage::Return(r) => assert_eq!(Some(&r), v.get("return")),
                    QmpMessage::Error { class, desc } => {
                        let field = |k: &str| v["error"].get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                        assert_eq!((class, desc), (field("class"), field("desc")));
                    }
                    QmpMessage::Event { name, data } => {
                        assert_eq!(v.get("event").and_then(Value::as_str), Some(name.as_str()));
                        // What `Qmp::wait_event`'s callers look for in it.
                        let _ = data["device"] == "nic1";
                    }
                }
            }
            Err(QmpError::Protocol(shown)) => assert_eq!(shown, line),
            Err(other) => panic!("a line can only break the protocol, not {other}"),
        }
    }
}

/// Reply datagrams from UML's management console, each preceded here by
/// two bytes giving its length (cut at the largest datagram the engine
/// receives): gathered into one answer as `Mconsole::command` does, never
/// longer than its bound, and each reply decodes to what it says.
pub fn mconsole_reply(data: &[u8]) {
    const LARGEST: usize = 12 + mconsole::MAX_DATA;
    let mut answer = AnswerText::default();
    let mut rest = data;
    while let Some((len, after)) = rest.split_first_chunk::<2>() {
        let len = (u16::from_le_bytes(*len) as usize).min(LARGEST).min(after.len());
        let (datagram, after) = after.split_at(len);
        rest = after;
        if let Ok((err, more, text)) = mconsole::decode_reply(datagram) {
            assert!(text.chars().count() <= mconsole::MAX_DATA && !text.ends_with('\0'));
            if text.len() <= mconsole::MAX_DATA {
                let mut again = Vec::new();
                for word in [err, u32::from(more), text.len() as u32] {
                    again.extend_from_slice(&word.to_ne_bytes());
                }
                again.extend_from_slice(text.as_bytes());
                assert_eq!(mconsole::decode_reply(&again).expect("a reply written again"), (err, more, text));
            }
        }
        match answer.take(datagram) {
            Ok(Part::More) => {}
            Ok(Part::Answer(text) | Part::Refused(text)) => {
                assert!(text.len() <= mconsole::MAX_ANSWER);
                answer = AnswerText::default();
            }
            Err(McError::Malformed | McError::AnswerTooLong) => answer = AnswerText::default(),
            Err(other) => panic!("a reply is malformed or too long, not {other}"),
        }
    }
}

/// A line from a control-socket client (or the GUI's relay): parsed into
/// a request, and a command checked against the rules every sender
/// follows. A request written back as a client writes it reads back the
/// same and is judged the same; a capture target is resolved against a
/// small lab's ports; every answer is one line.
pub fn control_request(data: &[u8]) {
    // The server reads lines as text: other bytes end the connection.
    let Ok(line) = std::str::from_utf8(data) else { return };
    let (id, action) = control::parse_request(line);
    let answer = match action {
        Ok(Action::Command(command)) => {
            let checked = command.check().map_err(|e| e.to_string());
            let again = Request { id, command: Some((*command).clone()), ..Default::default() };
            let again = serde_json::to_string(&again).expect("a request serializes");
            let (again_id, again_action) = control::parse_request(&again);
            let Ok(Action::Command(again_command)) = again_action else {
                panic!("{line:?} written back as {again:?} no longer reads: {again_action:?}")
            };
            assert_eq!(again_id, id);
            assert_eq!(format!("{again_command:?}"), format!("{command:?}"), "written back as {again}");
            assert_eq!(again_command.check().map_err(|e| e.to_string()), checked);
            match checked {
                Ok(()) => Answer::new(id, Ok(Reply::Done)),
                Err(why) => Answer::failed(id, ErrorKind::Invalid, why),
            }
        }
        Ok(Action::Capture(request)) => {
            let entry = |id, segment: &str, lan| PortEntry { id, segment: segment.to_string(), lan };
            let ports: HashMap<(String, String), PortEntry> = [
                (("a".to_string(), "eth0".to_string()), entry(0, "a--b", false)),
                (("b".to_string(), "eth0".to_string()), entry(1, "a--b", false)),
                (("a".to_string(), "eth1".to_string()), entry(2, "sw", true)),
                (("sw".to_string(), "sw==sw2".to_string()), entry(3, "sw==sw2", false)),
            ]
            .into();
            if let Ok(taps) = capture::resolve(&ports, &request.target) {
                assert!(!taps.is_empty() && taps.iter().all(|t| t.point.port <= 3));
            }
            Answer::failed(id, ErrorKind::Invalid, request.target)
        }
        Ok(Action::Watch | Action::Stop) => Answer::new(id, Ok(Reply::Done)),
        Err(why) => Answer::failed(id, ErrorKind::Invalid, why),
    };
    let written = answer.line();
    assert!(!written.contains('\n'), "an answer is one line");
    assert!(serde_json::from_str::<Answer>(&written).is_ok(), "an answer reads back: {written}");
}

/// A request head sent to the GUI server: parsed, and let in only when it
/// names the server by its loopback name and port, comes from none of
/// another origin's pages, and carries the token.
pub fn http_head(data: &[u8]) {
    const PORT: u16 = 8123;
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    let Some(head) = http::parse_head(data) else { return };
    let _ = (head.wants_websocket(), head.subprotocols().count());
    let ours = [format!("127.0.0.1:{PORT}"), format!("localhost:{PORT}")];
    let route = http::Route::of(&head);
    match http::authorize(&head, route, PORT, TOKEN) {
        Ok(()) => {
            assert!(ours.iter().any(|o| head.header("host") == Some(o.as_str())));
            assert!(head.header("origin").is_none_or(|o| ours.iter().any(|h| o == format!("http://{h}"))));
            if route.needs_token() {
                assert_eq!(head.token(), Some(TOKEN), "only the token lets a request reach the lab");
            }
        }
        Err(refusal) => assert!(matches!(refusal.status().0, 401 | 403)),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(http::percent_decode(text).chars().count() <= text.len());
    }
}

/// What a browser's side of a WebSocket sends, in memory: the bytes to
/// read, and what the server writes back (pongs, close frames).
struct Wire<'a> {
    incoming: &'a [u8],
    outgoing: Vec<u8>,
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.incoming.read(buf)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes a page sends on a WebSocket whose handshake is done, read by the
/// server side as the GUI reads it (unmasked frames, bad opcodes, huge
/// lengths, fragments, control frames): every text message becomes one
/// control-socket line, which the lab then parses.
pub fn websocket_frames(data: &[u8]) {
    let mut ws = gui::server_socket(Wire { incoming: data, outgoing: Vec::new() });
    // Every message takes at least a frame header: this bounds the loop.
    for _ in 0..=data.len() {
        match ws.read() {
            Ok(tungstenite::Message::Text(text)) => {
                let line = gui::control_line(text.as_str());
                assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "one line: {line:?}");
                let _ = control::parse_request(&line);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

/// An option value as a script gives it, from JSON: objects are maps,
/// strings text, whole numbers integers, other numbers floats; `null`
/// stands for NaN and booleans for infinities, which Rhai floats can be
/// and JSON cannot. Arrays are what a script cannot give (None).
fn opt_value(v: &Value) -> Option<OptValue> {
    Some(match v {
        Value::Object(map) => OptValue::Map(opt_values(map)),
        Value::String(s) => OptValue::Text(s.clone()),
        Value::Number(n) => n.as_i64().map_or_else(|| OptValue::Number(n.as_f64().unwrap_or(f64::NAN)), OptValue::Int),
        Value::Null => OptValue::Number(f64::NAN),
        Value::Bool(positive) => OptValue::Number(if *positive { f64::INFINITY } else { f64::NEG_INFINITY }),
        Value::Array(_) => return None,
    })
}

fn opt_values(map: &serde_json::Map<String, Value>) -> Vec<(String, OptValue)> {
    map.iter().filter_map(|(k, v)| Some((k.clone(), opt_value(v)?))).collect()
}

/// Impairment values as scripts write them: a time ("10ms", "1e300s"), a
/// rate ("10mbit"), a distribution, or (when the text is a JSON object)
/// a whole option map. What parses is written back (as `:save` and
/// `link.impairment` do) and reads back the same.
pub fn impairment_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(d) = impair_values::parse_time("delay", text) {
        let written = impairment::format_time(d);
        assert_eq!(impair_values::parse_time("delay", &written), Ok(d), "{text:?} written as {written:?}");
    }
    if let Ok(r) = impair_values::parse_rate(text) {
        let written = impairment::format_rate(r);
        assert_eq!(impair_values::parse_rate(&written), Ok(r), "{text:?} written as {written:?}");
    }
    if let Ok(d) = text.parse::<Distribution>() {
        assert_eq!(d.to_string(), text);
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else { return };
    let opts = opt_values(&map);
    match impairment::parse(&opts) {
        Ok(Some(imp)) => check_written_back(&imp, true),
        Ok(None) => assert!(!opts.iter().any(|(k, _)| impairment::is_impairment_key(k))),
        Err(why) => assert!(!why.is_empty()),
    }
}

/// An impairment that passed its checks, written as a script's options
/// (as `:save` and `link.impairment` do), reads back the same: exactly if
/// a script gave it (`exact`), else within a rounding of each probability
/// (some are no percentage divided by 100), and exactly from then on. Its
/// Rhai text is not empty.
fn check_written_back(imp: &LinkImpairment, exact: bool) {
    assert_eq!(imp.check(), Ok(()));
    let read_back = |imp: &LinkImpairment| {
        let written = impairment::render(imp);
        for (_, v) in &written {
            assert!(!impairment::to_rhai(v).is_empty());
        }
        match impairment::parse(&written) {
            Ok(back) => back.unwrap_or_default(),
            Err(why) => panic!("{imp:?} written as {written:?} does not read back: {why}"),
        }
    };
    let back = read_back(imp);
    if exact {
        assert_eq!(&back, imp, "written as {:?}", impairment::render(imp));
    } else {
        let (a, b) = (serde_json::to_value(imp).expect("JSON"), serde_json::to_value(&back).expect("JSON"));
        assert!(nearly_equal(&a, &b), "{a} read back as {b}");
        assert_eq!(read_back(&back), back, "written as {:?}", impairment::render(&back));
    }
}

/// The same JSON, but for numbers within 1e-15 of each other.
fn nearly_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if x.fract() != 0.0 || y.fract() != 0.0 => (x - y).abs() <= 1e-15,
            _ => x == y,
        },
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| nearly_equal(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| nearly_equal(v, w)),
        _ => a == b,
    }
}

/// A link's impairments as JSON (what the control socket, the GUI and a
/// saved lab carry): what reads also writes back and reads the same, as
/// JSON and as a script's options; and the switch's model applies it to
/// a few frames of the sizes and at the times the last bytes choose,
/// never sending one before it arrived or flipping a bit outside it.
pub fn impairment_json(data: &[u8]) {
    let Ok(imp) = serde_json::from_slice::<LinkImpairment>(data) else { return };
    let json = serde_json::to_string(&imp).expect("an impairment serializes");
    assert_eq!(serde_json::from_str::<LinkImpairment>(&json).ok().as_ref(), Some(&imp), "written as {json}");
    if imp.check().is_err() {
        return;
    }
    check_written_back(&imp, false);
    let seed = imp.seed.unwrap_or(1);
    let frames: Vec<(u64, usize)> = data
        .rchunks(3)
        .take(32)
        .map(|c| (u64::from(c[0]) * 997, c.iter().map(|b| *b as usize).product::<usize>() % MAX_BUFFER_LEN))
        .collect();
    for params in [&imp.a_to_b, &imp.b_to_a] {
        let mut direction = Direction::new(params.clone(), seed);
        let mut now = Duration::ZERO;
        for (queued, &(step_us, len)) in frames.iter().enumerate() {
            now += Duration::from_micros(step_us);
            let verdict = direction.on_frame(now, len, queued);
            assert!(verdict.departures.len() + verdict.drops.len() <= 2, "a frame and at most one duplicate");
            for d in &verdict.departures {
                assert!(d.at >= now, "sent at {:?}, before it arrived at {now:?}", d.at);
                assert!(d.flip_bit.is_none_or(|bit| bit < len.max(1) * 8));
            }
        }
    }
}

/// A saved lab's `lab.json`, as `load_lab` reads it: refused, or turned
/// into the commands that wire it again, each judged by the rules every
/// sender follows, and disks that stay inside the saved lab.
pub fn saved_lab(data: &[u8]) {
    let Ok(saved) = SavedLab::from_json(data) else { return };
    for rel in saved.disks.values() {
        let inside = std::path::Path::new(rel).components().all(|c| matches!(c, std::path::Component::Normal(_)));
        assert!(inside || rel.is_empty(), "disk {rel:?} leaves the saved lab");
    }
    for command in rebuild::wiring(&saved.topology) {
        let _ = command.check();
    }
}

/// What a VDE client sends a plug's control socket, read as the plug's
/// thread reads it, in pieces: no piece shorter than the fixed part is a
/// request, a request's address fits a `sun_path` and its description
/// is short and holds no control character; what was refused stays
/// refused however much more comes.
pub fn vde_request(data: &[u8]) {
    use crate::host::plug::{parse_vde_request, VdeAddress, VdeParse, SOCKADDR_UN_LEN, VDE_MAX_REQUEST};
    let mut refused_at = None;
    for end in 0..=data.len().min(VDE_MAX_REQUEST + 8) {
        match parse_vde_request(&data[..end]) {
            VdeParse::Incomplete => {
                assert!(refused_at.is_none(), "refused at {refused_at:?}, then incomplete at {end}")
            }
            VdeParse::Bad(why) => {
                assert!(!why.is_empty());
                refused_at.get_or_insert(end);
            }
            VdeParse::Request(req) => {
                assert!(refused_at.is_none(), "refused at {refused_at:?}, then a request at {end}");
                assert!(end >= 12 + SOCKADDR_UN_LEN, "a request of {end} bytes");
                match &req.address {
                    VdeAddress::Path(p) => assert!(p.len() <= 108 && !p.contains(&0) && !p.is_empty(), "a sun_path"),
                    VdeAddress::Abstract(a) => assert_eq!(a.len(), 107),
                }
                assert!(req.description.chars().count() <= 64);
                assert!(!req.description.chars().any(char::is_control));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::switch::impair::Rng;

    /// Mutated inputs per target in the short pass.
    const MUTATIONS: usize = 20_000;

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
    }

    /// The files of `dir`, in name order (none if it does not exist).
    fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut files: Vec<PathBuf> = entries.map(|e| e.expect("a readable entry").path()).collect();
        files.sort();
        files
            .into_iter()
            .filter(|p| p.is_file())
            .map(|p| (p.display().to_string(), std::fs::read(&p).expect("a readable input")))
            .collect()
    }

    /// Values that sit on the edges decoders test: lengths, EtherTypes,
    /// flags, JSON and HTTP punctuation.
    const INTERESTING: &[u8] = &[
        0, 1, 2, 4, 6, 0x0e, 0x11, 0x20, 0x22, 0x2c, 0x2d, 0x30, 0x3a, 0x45, 0x7b, 0x7d, 0x7f, 0x80, 0x81, 0x86, 0xdd,
        0xff,
    ];
    const INTERESTING_WORDS: &[u32] =
        &[0, 1, 13, 14, 18, 20, 40, 60, 0x7fff, 0x8000, 0x8100, 0xffff, 0x1_0000, u32::MAX];

    fn below(rng: &mut Rng, n: usize) -> usize {
        (rng.next_u64() % n.max(1) as u64) as usize
    }

    /// One to four edits of `base`: bit flips, edge values, inserted,
    /// removed or repeated bytes, a cut, or a splice with `other`.
    fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
        let mut out = base.to_vec();
        for _ in 0..1 + below(rng, 4) {
            let at = below(rng, out.len());
            match below(rng, 9) {
                0 if !out.is_empty() => out[at] ^= 1 << below(rng, 8),
                1 if !out.is_empty() => out[at] = INTERESTING[below(rng, INTERESTING.len())],
                2 => {
                    let word = INTERESTING_WORDS[below(rng, INTERESTING_WORDS.len())];
                    let bytes = if rng.next_u64() & 1 == 0 { word.to_be_bytes() } else { word.to_le_bytes() };
                    let width = [1, 2, 4][below(rng, 3)];
                    for (i, b) in bytes[4 - width..].iter().enumerate() {
                        if let Some(slot) = out.get_mut(at + i) {
                            *slot = *b;
                        }
                    }
                }
                3 => {
                    let n = 1 + below(rng, 16);
                    let fresh: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                    out.splice(at..at, fresh);
                }
                4 if !out.is_empty() => {
                    let end = (at + 1 + below(rng, 32)).min(out.len());
                    out.drain(at..end);
                }
                5 if !out.is_empty() => {
                    let end = (at + 1 + below(rng, 64)).min(out.len());
                    let copy = out[at..end].to_vec();
                    let to = below(rng, out.len());
                    out.splice(to..to, copy);
                }
                6 => out.truncate(at),
                7 if !other.is_empty() => {
                    let from = below(rng, other.len());
                    out.truncate(at);
                    out.extend_from_slice(&other[from..]);
                }
                _ => {
                    if let Some(b) = out.get_mut(at) {
                        *b = rng.next_u64() as u8;
                    }
                }
            }
        }
        out
    }

    /// Runs `target` on `input`; a panic fails the test with the input
    /// written where it can be copied into the target's regressions.
    fn survives(name: &str, target: Target, input: &[u8], what: &str) {
        if std::panic::catch_unwind(|| target(input)).is_err() {
            let kept = std::env::temp_dir().join(format!("clonet-fuzz-{name}-failure"));
            let _ = std::fs::write(&kept, input);
            panic!(
                "fuzz target {name} panicked on {what} (kept in {}: copy it to fuzz/regressions/{name}/)",
                kept.display()
            );
        }
    }

    #[test]
    fn every_target_survives_its_corpus_its_regressions_and_a_seeded_mutation_pass() {
        for &(name, target) in TARGETS {
            let corpus = inputs(&fuzz_dir().join("corpus").join(name));
            assert!(!corpus.is_empty(), "fuzz/corpus/{name}/ holds no seed inputs");
            let regressions = inputs(&fuzz_dir().join("regressions").join(name));
            for (path, input) in corpus.iter().chain(&regressions) {
                survives(name, target, input, path);
            }
            let pool: Vec<&[u8]> = corpus.iter().chain(&regressions).map(|(_, b)| b.as_slice()).collect();
            let mut rng = Rng::seeded(crate::vocab::fnv1a(&[name.as_bytes()]));
            for round in 0..MUTATIONS {
                let base = pool[below(&mut rng, pool.len())];
                let other = pool[below(&mut rng, pool.len())];
                let input = mutate(&mut rng, base, other);
                survives(name, target, &input, &format!("mutation {round}"));
            }
        }
    }

    /// Writes the seed inputs of `fuzz/corpus/` (`seed-*` files), made by
    /// the project's own code where it has a writer: real frames, a TSO
    /// super-frame, a request per command, a saved lab. Run it after adding
    /// a target: `cargo test --lib fuzzing::tests::write_seed_corpus -- --ignored`.
    #[test]
    #[ignore = "writes into fuzz/corpus; run by hand"]
    fn write_seed_corpus() {
        let seeds = seed_inputs();
        for &(name, target) in TARGETS {
            let dir = fuzz_dir().join("corpus").join(name);
            std::fs::create_dir_all(&dir).expect("a corpus directory");
            let mine: Vec<_> = seeds.iter().filter(|(t, _, _)| *t == name).collect();
            assert!(!mine.is_empty(), "no seeds for {name}");
            for (_, file, bytes) in mine {
                target(bytes);
                std::fs::write(dir.join(format!("seed-{file}")), bytes).expect("a seed written");
            }
        }
    }

    /// Ethernet frames as a node sends them: (name, frame).
    fn ethernet_frames() -> Vec<(&'static str, Vec<u8>)> {
        use etherparse::PacketBuilder;
        const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
        const B: [u8; 6] = [2, 0, 0, 0, 0, 2];
        let mut frames = Vec::new();
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&A);
        arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&A);
        arp.extend_from_slice(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
        frames.push(("arp-request", arp));
        let mut f = Vec::new();
        let ping = PacketBuilder::ethernet2(A, B).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).icmpv4_echo_request(7, 1);
        ping.write(&mut f, &[0x5a; 56]).expect("a frame");
        frames.push(("ipv4-icmp-echo", f));
        let mut f = Vec::new();
        let syn = PacketBuilder::ethernet2(A, B).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(40000, 5201, 1000, 64240);
        syn.syn().write(&mut f, &[]).expect("a frame");
        frames.push(("ipv4-tcp-syn", f));
        let mut f = Vec::new();
        let tagged = PacketBuilder::ethernet2(A, B).single_vlan(10.try_into().expect("a VLAN id"));
        tagged
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(5201, 40000, 7, 512)
            .ack(1001)
            .write(&mut f, b"data")
            .expect("a frame");
        frames.push(("vlan10-ipv6-tcp", f));
        let mut f = Vec::new();
        let udp = PacketBuilder::ethernet2(B, A).ipv4([10, 0, 0, 2], [10, 0, 0, 1], 5).udp(53, 9999);
        udp.write(&mut f, b"answer").expect("a frame");
        frames.push(("ipv4-udp-dns", f));
        let mut f = Vec::new();
        let ns = PacketBuilder::ethernet2(A, [0x33, 0x33, 0xff, 0, 0, 2]).ipv6([0xfe; 16], [0xff; 16], 255);
        ns.icmpv6_echo_request(1, 2).write(&mut f, &[1, 2, 3]).expect("a frame");
        frames.push(("ipv6-icmp-echo", f));
        frames
    }

    fn headed(eth: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; VNET_HDR_LEN];
        b.extend_from_slice(eth);
        b
    }

    /// A TSO super-frame whose Ethernet header carries VLAN tag `vid`.
    fn tagged_gso_frame(vid: u16) -> Vec<u8> {
        let plain = gso::gso_frame(false, 3000, 0x18);
        let mut hdr = VnetHdr::parse(&plain).expect("a header");
        hdr.csum_start += 4;
        hdr.hdr_len += 4;
        let mut b = vec![0u8; VNET_HDR_LEN];
        hdr.write(&mut b);
        b.extend_from_slice(&plain[VNET_HDR_LEN..VNET_HDR_LEN + 12]);
        b.extend_from_slice(&vlan::TPID.to_be_bytes());
        b.extend_from_slice(&vid.to_be_bytes());
        b.extend_from_slice(&plain[VNET_HDR_LEN + 12..]);
        b
    }

    /// A client's masked WebSocket frame.
    fn ws_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![u8::from(fin) << 7 | opcode];
        if payload.len() < 126 {
            f.push(0x80 | payload.len() as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn mconsole_datagram(err: u32, more: bool, text: &str) -> Vec<u8> {
        let mut d = Vec::new();
        for w in [err, u32::from(more), text.len() as u32] {
            d.extend_from_slice(&w.to_ne_bytes());
        }
        d.extend_from_slice(text.as_bytes());
        let mut framed = (d.len() as u16).to_le_bytes().to_vec();
        framed.extend_from_slice(&d);
        framed
    }

    /// One request line per kind of request, as a client writes it.
    fn control_lines() -> Vec<(String, String)> {
        use crate::lab::command::{CloneSource, Command, LinkOptions, PingTarget};
        use crate::vocab::exec::ExecRequest;
        use crate::vocab::{NodeKind, NodeOptions, Timeout};
        let s = |x: &str| x.to_string();
        let impaired: LinkImpairment =
            serde_json::from_str(r#"{"a_to_b":{"delay":{"secs":0,"nanos":20000000},"loss":{"random":{"p":0.01,"correlation":0.25}}},"seed":7}"#)
                .expect("an impairment");
        let link_options = LinkOptions {
            mtu: Some(Mtu::new(9000).expect("an MTU")),
            name_a: Some(s("eth1")),
            impair: Some(impaired.clone()),
            ..Default::default()
        };
        let kvm = NodeOptions { mem_mb: Some(crate::vocab::MemMb::new(512).expect("memory")), ..Default::default() };
        let commands = vec![
            Command::AddNode { name: s("a"), kind: NodeKind::Ns, options: NodeOptions::default() },
            Command::AddNode { name: s("k"), kind: NodeKind::Kvm, options: kvm },
            Command::DeleteNode { node: s("a") },
            Command::StopNode { node: s("a") },
            Command::StartNode { node: s("a") },
            Command::AddLan { name: s("sw") },
            Command::DeleteLan { name: s("sw") },
            Command::AddLink {
                a: s("a"),
                b: s("b"),
                ip_a: Some("10.0.0.1/24".parse().expect("a CIDR")),
                ip_b: Some("10.0.0.2/24".parse().expect("a CIDR")),
                options: link_options,
            },
            Command::JoinLan {
                node: s("c"),
                lan: s("sw"),
                ip: Some("fd00::3/64".parse().expect("a CIDR")),
                options: LinkOptions { vlan: Some(VlanMode::Trunk(vec![vid(10), vid(20)])), ..Default::default() },
            },
            Command::LinkLans { a: s("sw"), b: s("sw2"), vlan: Some(VlanMode::Access(vid(30))) },
            Command::DeleteLink { link: s("a--b") },
            Command::Unlink { a: s("a"), b: s("sw") },
            Command::SetLinkUp { link: s("a--b"), up: false },
            Command::SetImpairment { link: s("a:eth0"), impair: impaired },
            Command::Seed { seed: 42 },
            Command::StartCapture { target: s("a--b"), file: "/tmp/a.pcap".into() },
            Command::StopCapture { id: 1 },
            Command::SetIp { node: s("a"), iface: s("eth0"), cidr: "192.168.1.1/24".parse().expect("a CIDR") },
            Command::AddRoute {
                node: s("a"),
                route: crate::vocab::Route {
                    dst: "default".parse().expect("a prefix"),
                    via: Some("10.0.0.2".parse().expect("an address")),
                    dev: None,
                },
            },
            Command::Exec {
                node: s("a"),
                request: ExecRequest {
                    argv: vec![s("sh"), s("-c"), s("echo hi")],
                    stdin: b"in".to_vec(),
                    timeout: Timeout::from_millis(5000).expect("a timeout"),
                    max_output: crate::vocab::OutputLimit::new(1000).expect("an output limit"),
                    user: Some(s("web")),
                    cwd: Some(s("/srv")),
                },
            },
            Command::Ping {
                from: s("a"),
                to: PingTarget::Addr("10.0.0.2".parse().expect("an address")),
                timeout_ms: Timeout::from_millis(1000).expect("a timeout"),
            },
            Command::Ping {
                from: s("a"),
                to: PingTarget::Node(s("b")),
                timeout_ms: Timeout::from_millis(1000).expect("a timeout"),
            },
            Command::NodeInfo { node: s("a") },
            Command::PauseNode { node: s("a"), paused: true },
            Command::Snapshot { node: s("a"), name: s("s1"), memory: false },
            Command::Clone { source: CloneSource::Snapshot(s("s1")), name: s("a2"), mem_mb: None, cpus: None },
            Command::Restore { node: s("a"), snapshot: s("s1") },
            Command::Snapshots,
            Command::DeleteSnapshot { name: s("s1") },
            Command::SaveLab { dir: "/tmp/saved".into() },
            Command::LoadLab { dir: "/tmp/saved".into() },
            Command::Console { node: s("a") },
            Command::Counters,
            Command::Fdb { lan: s("sw") },
            Command::Topology,
            Command::LabInfo,
        ];
        let mut lines: Vec<(String, String)> = commands
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let request = Request { id: Some(i as u64 + 1), command: Some(c), ..Default::default() };
                let line = serde_json::to_string(&request).expect("a request");
                let op = serde_json::from_str::<Value>(&line).expect("JSON")["command"]["op"]
                    .as_str()
                    .expect("an op")
                    .to_string();
                (format!("{op}-{}", i + 1), line)
            })
            .collect();
        lines.push((s("watch"), s(r#"{"id":90,"watch":true}"#)));
        lines.push((s("stop"), s(r#"{"id":91,"stop":true}"#)));
        lines.push((s("capture"), s(r#"{"capture":{"target":"a--b","count":10}}"#)));
        for (_, line) in &lines {
            assert!(control::parse_request(line).1.is_ok(), "{line}");
        }
        lines
    }

    /// A saved lab's `lab.json` as `save_lab` writes it.
    fn saved_lab_json() -> Vec<u8> {
        use crate::lab::topology::Topology;
        use crate::vocab::NodeKind;
        let mut t = Topology::new("lab");
        for n in ["a", "b", "c"] {
            t.add_node(n, NodeKind::Ns).expect("a node");
        }
        t.add_lan("sw").expect("a LAN");
        t.add_lan("sw2").expect("a LAN");
        let ia = t.plan_iface("a", Some("eth3"), None, Mtu::new(9000).expect("an MTU")).expect("an interface");
        let ib = t.next_iface("b", Mtu::new(9000).expect("an MTU")).expect("an interface");
        t.add_link("ab", ("a", ia), ("b", ib)).expect("a link");
        t.add_addr("a", "eth3", "10.0.0.1/24".parse().expect("a CIDR")).expect("an address");
        t.add_addr("a", "eth3", "fd00::1/64".parse().expect("a CIDR")).expect("an address");
        t.set_link_up("ab", false).expect("a link");
        let ic = t.next_iface("c", Mtu::ETHERNET).expect("an interface");
        t.add_lan_member("sw", "c", ic, VlanMode::Trunk(vec![vid(10), vid(20)])).expect("a LAN port");
        t.add_uplink("sw", "sw2", VlanMode::Access(vid(30))).expect("an uplink");
        let route = crate::vocab::Route {
            dst: "default".parse().expect("a prefix"),
            via: Some("10.0.0.2".parse().expect("an address")),
            dev: None,
        };
        t.add_route("a", route).expect("a route");
        t.set_running("c", false).expect("a node");
        t.links.get_mut("ab").expect("the link").impair =
            serde_json::from_str(r#"{"a_to_b":{"delay":{"secs":0,"nanos":5000000}},"seed":3}"#).expect("impairment");
        let disks = [("a", "disks/a"), ("b", "disks/b.cow")].map(|(n, d)| (n.to_string(), d.to_string())).into();
        serde_json::to_vec_pretty(&SavedLab { topology: t, disks }).expect("a saved lab")
    }

    /// Every seed: (target, file name, bytes).
    fn seed_inputs() -> Vec<(&'static str, String, Vec<u8>)> {
        let mut seeds: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
        let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| seeds.push((target, name.to_string(), bytes));
        for (name, eth) in ethernet_frames() {
            add("sniff_summary", name, eth.clone());
            add("uml_bess_message", name, eth.clone());
            add("switch_frame", name, headed(&eth));
            let mut record = vec![255, 0];
            record.extend_from_slice(&(eth.len() as u32).to_be_bytes());
            record.extend_from_slice(&eth);
            add("stream_deframer", name, record);
        }
        let mtu = |m: u16| (m - Mtu::MIN as u16).to_le_bytes().to_vec();
        for (name, frame) in [
            ("tso-ipv4-4000", gso::gso_frame(false, 4000, 0x18)),
            ("tso-ipv6-3000-fin", gso::gso_frame(true, 3000, 0x11)),
            ("tso-vlan20-ipv4", tagged_gso_frame(20)),
        ] {
            add("switch_frame", name, frame.clone());
            add("sniff_summary", name, frame[VNET_HDR_LEN..].to_vec());
            add("gso_segment", &format!("{name}-mtu1500"), [mtu(1500), frame.clone()].concat());
            add("gso_segment", &format!("{name}-mtu576"), [mtu(576), frame].concat());
        }
        let mut seeded = headed(&ethernet_frames()[2].1);
        let hdr = VnetHdr { flags: VnetHdr::F_NEEDS_CSUM, csum_start: 34, csum_offset: 16, ..Default::default() };
        hdr.write(&mut seeded);
        add("switch_frame", "ipv4-tcp-needs-csum", seeded);
        let mut two = vec![200, 7];
        for (_, eth) in ethernet_frames().iter().take(2) {
            two.extend_from_slice(&(eth.len() as u32).to_be_bytes());
            two.extend_from_slice(eth);
        }
        two.extend_from_slice(&[0, 0, 0]);
        add("stream_deframer", "two-records-and-a-partial-length", two);
        let ping = "PING 10.0.0.2 (10.0.0.2): 56 data bytes\n64 bytes from 10.0.0.2: seq=0 ttl=64 time=0.512 ms\n";
        add("agent_line", "hello", b"H clonet-agent 1\n".to_vec());
        add("agent_line", "ping-result", format!("R 7 0 {} -\n", B64.encode(ping)).into_bytes());
        add("agent_line", "failed-result", format!("R 8 127 - {}\n", B64.encode("sh: x: not found\n")).into_bytes());
        add("agent_line", "ping-output", ping.as_bytes().to_vec());
        add(
            "qmp_message",
            "greeting",
            br#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 8}, "package": "Debian 1:8.2.2"}, "capabilities": ["oob"]}}"#.to_vec(),
        );
        add(
            "qmp_message",
            "return",
            b"{\"return\": {}}\n{\"return\": {\"status\": \"running\", \"running\": true}}\n".to_vec(),
        );
        add(
            "qmp_message",
            "error",
            br#"{"error": {"class": "GenericError", "desc": "Duplicate ID 'nic1' for device"}}"#.to_vec(),
        );
        add(
            "qmp_message",
            "event",
            br#"{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/nic1", "device": "nic1"}}"#.to_vec(),
        );
        add(
            "mconsole_reply",
            "version",
            [mconsole_datagram(0, true, "Linux "), mconsole_datagram(0, false, "6.1.0\0")].concat(),
        );
        add("mconsole_reply", "refused", mconsole_datagram(1, false, "config_dev_list failed: device busy"));
        for (name, line) in control_lines() {
            add("control_request", &name, line.into_bytes());
        }
        let token = "0123456789abcdef0123456789abcdef";
        add(
            "http_head",
            "websocket-upgrade",
            format!("GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:8123\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:8123\r\n\r\n").into_bytes(),
        );
        add(
            "http_head",
            "capture-by-cookie",
            format!("GET /capture?target=a--b&seconds=5&x=%41+b HTTP/1.1\r\nHost: localhost:8123\r\nCookie: theme=dark; clonet_token={token}\r\nUser-Agent: Mozilla/5.0\r\n\r\n").into_bytes(),
        );
        add("http_head", "rebound-host", b"GET / HTTP/1.1\r\nHost: evil.example:8123\r\n\r\n".to_vec());
        let request = br#"{"id":1,"command":{"op":"add_lan","name":"sw"}}"#;
        add("websocket_frames", "text-request", ws_frame(true, 1, request));
        add(
            "websocket_frames",
            "fragments-ping-close",
            [
                ws_frame(false, 1, &request[..10]),
                ws_frame(true, 9, b"ping"),
                ws_frame(true, 0, &request[10..]),
                ws_frame(true, 2, &[0, 1, 2]),
                ws_frame(true, 8, &[0x03, 0xe8]),
            ]
            .concat(),
        );
        for (name, text) in [
            ("time-ms", "10ms"),
            ("time-fraction", "1.5s"),
            ("time-exponent", "1.5e3us"),
            ("time-huge", "1e300s"),
            ("time-ns", "1500ns"),
            ("rate-mbit", "10mbit"),
            ("rate-bytes", "100MBps"),
            ("distribution", "pareto"),
            (
                "options",
                r#"{"delay":"20ms","jitter":"5ms","distribution":"normal","loss":1.5,"loss_correlation":25,"rate":"10mbit","limit":50,"seed":7}"#,
            ),
            (
                "options-directions",
                r#"{"delay":3,"a_to_b":{"loss_model":{"gilbert":{"p":5,"r":50,"k":99.5}}},"b_to_a":{"delay":10.5,"reorder":25,"gap":5,"duplicate":1,"corrupt":0.1}}"#,
            ),
        ] {
            add("impairment_text", name, text.as_bytes().to_vec());
        }
        for (name, json) in [
            (
                "random-loss",
                r#"{"a_to_b":{"delay":{"secs":0,"nanos":20000000},"jitter":{"secs":0,"nanos":5000000},"distribution":"pareto","loss":{"random":{"p":0.01,"correlation":0.25}},"rate":10000000,"limit":100},"seed":7}"#,
            ),
            (
                "gilbert-reorder",
                r#"{"a_to_b":{"loss":{"gilbert":{"p":0.05,"r":0.5,"h":0.0,"k":1.0}}},"b_to_a":{"delay":{"secs":0,"nanos":10000000},"reorder":0.25,"gap":5,"duplicate":0.01,"corrupt":0.001}}"#,
            ),
        ] {
            add("impairment_json", name, json.as_bytes().to_vec());
        }
        add("saved_lab", "saved-by-the-project", saved_lab_json());
        for (name, lens, psh_last) in
            [("run-of-three", [1448, 1448, 700], false), ("psh-ends-it", [500, 500, 500], true)]
        {
            let mut input = Vec::new();
            let mut seq = 1u32;
            for (i, len) in lens.iter().enumerate() {
                let flags = if psh_last && i == 1 { 0x18 } else { 0x10 };
                let seg = crate::switch::gro::tcp_segment(seq, &vec![i as u8 + 1; *len], flags, 300);
                seq += *len as u32;
                input.extend_from_slice(&(seg.len() as u16).to_le_bytes());
                input.extend_from_slice(&seg);
            }
            add("gro_merge", name, input);
        }
        for (name, path, descr) in [
            ("vde-plug2tap", &b"/tmp/sw/.1234-00000"[..], &b"vde_plug2tap: user=root pid=1234\0"[..]),
            ("uml-daemon-abstract", &b"\0\x01\x02\x03uml"[..], &b""[..]),
        ] {
            let mut r = crate::host::plug::VDE_MAGIC.to_ne_bytes().to_vec();
            r.extend_from_slice(&crate::host::plug::VDE_VERSION.to_ne_bytes());
            r.extend_from_slice(&0u32.to_ne_bytes());
            let mut addr = [0u8; crate::host::plug::SOCKADDR_UN_LEN];
            addr[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
            addr[2..2 + path.len()].copy_from_slice(path);
            r.extend_from_slice(&addr);
            r.extend_from_slice(descr);
            add("vde_request", name, r);
        }
        add("kathara_lab", "two-routers", b"LAB_DESCRIPTION=\"x\"\nr1[0]=A\nr1[1]=B/02:00:00:00:00:01\nr1[image]=kathara/frr\nr2[0]=B\nr2[bridged]=true\nr2[port]=8080:80\n\0r2: r1\n".to_vec());
        add("kathara_lab", "bad-line", b"r1[0]=A\nnonsense\n".to_vec());
        add("clab_topology", "linux-and-bridge", b"name: t\ntopology:\n  kinds:\n    linux: {image: alpine}\n  nodes:\n    a: {kind: linux, env: {X: y}, binds: [\"d:/d:ro\"]}\n    sw: {kind: bridge}\n  links:\n    - endpoints: [\"a:eth1\", \"sw:p1\"]\n".to_vec());
        add("clab_topology", "extended-link", b"name: t\ntopology:\n  nodes:\n    a: {kind: linux, image: x}\n    b: {kind: linux, image: x}\n  links:\n    - type: veth\n      mtu: 9000\n      endpoints: [{node: a, interface: e1, mac: 02:00:00:00:00:09}, {node: b, interface: e1}]\n".to_vec());
        for (name, r) in [
            ("registry", "quay.io/frrouting/frr:9.1.0"),
            ("hub", "alpine"),
            ("layout", "oci:/srv/img:v1"),
            ("archive", "docker-archive:a.tar"),
        ] {
            add("image_reference", name, r.as_bytes().to_vec());
        }
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "etc/marker", &b"hello"[..]).expect("a tar in memory");
        let tar = tar.into_inner().expect("a tar in memory");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).expect("gzip in memory");
        add("layer_blob", "gzip", gz.finish().expect("gzip in memory"));
        add(
            "layer_blob",
            "zstd",
            ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest),
        );
        add("layer_blob", "plain", tar);
        let mut datagram = crate::switch::vxlan::header(42).to_vec();
        datagram.extend_from_slice(&[0xff; 6]);
        datagram.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
        add("vxlan_datagram", "arp-broadcast", datagram);
        seeds
    }

    #[test]
    fn every_target_has_a_cargo_fuzz_binary_and_no_binary_lacks_a_target() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
        let binaries: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.trim().strip_prefix("name = \""))
            .filter_map(|l| l.strip_suffix('"'))
            .filter(|n| *n != "clonet-fuzz")
            .collect();
        let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
        assert_eq!(binaries, names, "fuzz/Cargo.toml's [[bin]]s and fuzzing::TARGETS, in the same order");
        for name in names {
            let body = std::fs::read_to_string(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs")))
                .unwrap_or_else(|e| panic!("fuzz/fuzz_targets/{name}.rs: {e}"));
            assert!(body.contains(&format!("clonet::fuzzing::{name}(")), "{name}.rs calls clonet::fuzzing::{name}");
        }
    }
}
