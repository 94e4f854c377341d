//! Software offloads (sans-IO): finishing a partial checksum, and cutting a
//! TCP GSO super-frame into segments that fit a port without offloads.
//!
//! A TAP opened with TSO hands the switch 64 KiB TCP frames whose checksum
//! is only seeded (`VIRTIO_NET_HDR_F_NEEDS_CSUM`). Ports that cannot take
//! such frames (UML and QEMU sockets) must get real packets: each segment
//! gets its own IP length (and IPv4 id and header checksum), TCP sequence
//! number, flags and full TCP checksum. Segments are cut to the egress
//! port's MTU, not to the sender's MSS: a port with a large MTU gets few,
//! large packets.
use super::frame::{Frame, GsoType, VnetHdr, ETH_HDR_LEN, VNET_HDR_LEN};

/// Ones'-complement sum of 16-bit big-endian words, added to `init`.
pub fn sum(data: &[u8], init: u32) -> u32 {
    let mut s = init as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        s += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        s += (*last as u64) << 8;
    }
    while s >> 32 != 0 {
        s = (s & 0xffff_ffff) + (s >> 32);
    }
    s as u32
}

/// Folds a sum to 16 bits and complements it: the checksum to store.
pub fn finish(s: u32) -> u16 {
    let mut s = s;
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Why a frame cannot be made fit for a port without offloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoError {
    /// Not IPv4/IPv6 TCP (e.g. UDP fragmentation offload, or IPv6
    /// extension headers): it would need IP fragmentation.
    Unsupported,
    /// Headers that contradict the virtio-net header or the frame length.
    Malformed,
    /// The MTU leaves no room for payload after the headers.
    MtuTooSmall,
}

/// Where the headers of a TCP frame are, in bytes from the Ethernet start.
struct Layout {
    l3: usize,
    v6: bool,
    l4: usize,
    payload: usize,
}

fn layout(eth: &[u8]) -> Result<Layout, GsoError> {
    let mut l3 = ETH_HDR_LEN;
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    if ethertype == 0x8100 {
        if eth.len() < ETH_HDR_LEN + 4 {
            return Err(GsoError::Malformed);
        }
        ethertype = u16::from_be_bytes([eth[16], eth[17]]);
        l3 += 4;
    }
    let (v6, l4) = match ethertype {
        0x0800 => {
            let ihl = (*eth.get(l3).ok_or(GsoError::Malformed)? & 0x0f) as usize * 4;
            if ihl < 20 || eth.get(l3 + 9) != Some(&6) {
                return Err(if ihl < 20 { GsoError::Malformed } else { GsoError::Unsupported });
            }
            (false, l3 + ihl)
        }
        0x86dd => {
            if eth.get(l3 + 6) != Some(&6) {
                return Err(GsoError::Unsupported);
            }
            (true, l3 + 40)
        }
        _ => return Err(GsoError::Unsupported),
    };
    let off = (*eth.get(l4 + 12).ok_or(GsoError::Malformed)? >> 4) as usize * 4;
    let payload = l4 + off;
    if off < 20 || payload > eth.len() {
        return Err(GsoError::Malformed);
    }
    Ok(Layout { l3, v6, l4, payload })
}

/// How many bytes of headers (Ethernet, VLAN tag, IP, TCP) precede the
/// payload of a TCP frame: what every segment repeats.
pub fn header_len(eth: &[u8]) -> Result<usize, GsoError> {
    layout(eth).map(|l| l.payload)
}

/// The sum of the TCP pseudo-header for a segment of `tcp_len` bytes.
fn pseudo_header(eth: &[u8], l: &Layout, tcp_len: usize) -> u32 {
    let mut s = if l.v6 { sum(&eth[l.l3 + 8..l.l3 + 40], 0) } else { sum(&eth[l.l3 + 12..l.l3 + 20], 0) };
    s = sum(&[0, 6], s);
    s = sum(&(tcp_len as u32).to_be_bytes(), s);
    s
}

/// Completes the checksum a `NEEDS_CSUM` frame left seeded, in place
/// (`eth` is the Ethernet frame, `hdr` its virtio-net header).
pub fn complete_checksum(hdr: &VnetHdr, eth: &mut [u8]) -> Result<(), GsoError> {
    if hdr.flags & VnetHdr::F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = hdr.csum_start as usize;
    let at = start + hdr.csum_offset as usize;
    if at + 2 > eth.len() {
        return Err(GsoError::Malformed);
    }
    let c = finish(sum(&eth[start..], 0));
    eth[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Cuts a TCP GSO frame into segments whose IP packets fit `mtu`, and
/// hands each (virtio-net header included, all zero) to `emit`. `scratch`
/// is reused between calls so segmenting allocates nothing once warm.
pub fn segment(
    frame: &Frame<'_>,
    mtu: usize,
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, GsoError> {
    if !matches!(frame.vnet.gso(), GsoType::TcpV4 | GsoType::TcpV6) {
        return Err(GsoError::Unsupported);
    }
    let eth = frame.eth;
    let l = layout(eth)?;
    let headers = l.payload;
    let room = mtu.checked_sub(headers - l.l3).filter(|r| *r > 0).ok_or(GsoError::MtuTooSmall)?;
    let payload = &eth[headers..];
    let tcp_hdr_len = headers - l.l4;
    let seq0 = u32::from_be_bytes(eth[l.l4 + 4..l.l4 + 8].try_into().expect("4 bytes"));
    let flags0 = eth[l.l4 + 13];
    let id0 = u16::from_be_bytes([eth[l.l3 + 4], eth[l.l3 + 5]]);
    let count = payload.len().div_ceil(room).max(1);
    for (i, chunk) in
        payload.chunks(room).chain(std::iter::once(&payload[..0]).take(usize::from(payload.is_empty()))).enumerate()
    {
        scratch.clear();
        scratch.resize(VNET_HDR_LEN, 0);
        scratch.extend_from_slice(&eth[..headers]);
        scratch.extend_from_slice(chunk);
        let seg = &mut scratch[VNET_HDR_LEN..];
        let tcp_len = tcp_hdr_len + chunk.len();
        if l.v6 {
            seg[l.l3 + 4..l.l3 + 6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        } else {
            let ip_len = (l.l4 - l.l3 + tcp_len) as u16;
            seg[l.l3 + 2..l.l3 + 4].copy_from_slice(&ip_len.to_be_bytes());
            seg[l.l3 + 4..l.l3 + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            seg[l.l3 + 10..l.l3 + 12].fill(0);
            let c = finish(sum(&seg[l.l3..l.l4], 0));
            seg[l.l3 + 10..l.l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * room) as u32);
        seg[l.l4 + 4..l.l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < count {
            flags &= !(0x01 | 0x08); // FIN and PSH only on the last segment
        }
        if i > 0 {
            flags &= !0x80; // CWR only on the first
        }
        seg[l.l4 + 13] = flags;
        seg[l.l4 + 16..l.l4 + 18].fill(0);
        let c = finish(sum(&seg[l.l4..], pseudo_header(seg, &l, tcp_len)));
        seg[l.l4 + 16..l.l4 + 18].copy_from_slice(&c.to_be_bytes());
        emit(scratch);
    }
    Ok(count)
}

/// For tests: a TCP frame as a TSO TAP hands it over: checksum seeded only.
#[cfg(test)]
pub(crate) fn gso_frame(v6: bool, payload: usize, flags: u8) -> Vec<u8> {
    let mut b = vec![0u8; VNET_HDR_LEN];
    b.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    if v6 {
        b.extend_from_slice(&[0x86, 0xdd]);
        b.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, 6, 64]);
        b.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        b.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        b.extend_from_slice(&[0x08, 0x00]);
        b.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    }
    let l4 = b.len() - VNET_HDR_LEN;
    // ports 5001 -> 40000, seq 1000, ack 7, offset 8 words (with 12 option bytes)
    b.extend_from_slice(&[0x13, 0x89, 0x9c, 0x40, 0, 0, 0x03, 0xe8, 0, 0, 0, 7, 0x80, flags, 0xff, 0xff, 0, 0, 0, 0]);
    b.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    b.extend((0..payload).map(|i| (i % 251) as u8));
    let hdr_len = (b.len() - VNET_HDR_LEN - payload) as u16;
    VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: if v6 { 4 } else { 1 },
        hdr_len,
        gso_size: 1448,
        csum_start: l4 as u16,
        csum_offset: 16,
    }
    .write(&mut b);
    b
}

/// For tests: checks a segment's IP and TCP checksums and lengths;
/// returns (sequence number, TCP flags, payload length).
#[cfg(test)]
pub(crate) fn verify(seg: &[u8], v6: bool) -> (u32, u8, usize) {
    let eth = &seg[VNET_HDR_LEN..];
    let l = layout(eth).unwrap();
    if !v6 {
        assert_eq!(finish(sum(&eth[l.l3..l.l4], 0)), 0, "IPv4 header checksum");
        assert_eq!(u16::from_be_bytes([eth[l.l3 + 2], eth[l.l3 + 3]]) as usize, eth.len() - l.l3, "IPv4 length");
    } else {
        assert_eq!(u16::from_be_bytes([eth[l.l3 + 4], eth[l.l3 + 5]]) as usize, eth.len() - l.l4, "IPv6 length");
    }
    let tcp_len = eth.len() - l.l4;
    assert_eq!(finish(sum(&eth[l.l4..], pseudo_header(eth, &l, tcp_len))), 0, "TCP checksum");
    let seq = u32::from_be_bytes(eth[l.l4 + 4..l.l4 + 8].try_into().unwrap());
    (seq, eth[l.l4 + 13], eth.len() - l.payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp4_frames_are_cut_to_the_mtu_with_valid_checksums() {
        let b = gso_frame(false, 4000, 0x18 | 0x80); // PSH|ACK|CWR
        let f = Frame::parse(&b).unwrap();
        let mut segs = Vec::new();
        let n = segment(&f, 1500, &mut Vec::new(), |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(n, 3);
        let room = 1500 - 20 - 32;
        let got: Vec<_> = segs.iter().map(|s| verify(s, false)).collect();
        assert_eq!(got[0], (1000, 0x10 | 0x80, room), "first: no PSH yet, CWR kept");
        assert_eq!(got[1], (1000 + room as u32, 0x10, room));
        assert_eq!(got[2], (1000 + 2 * room as u32, 0x18, 4000 - 2 * room), "last: PSH");
        let ids: Vec<u16> =
            segs.iter().map(|s| u16::from_be_bytes([s[VNET_HDR_LEN + 18], s[VNET_HDR_LEN + 19]])).collect();
        assert_eq!(ids, [0x1234, 0x1235, 0x1236]);
        assert!(segs.iter().all(|s| s[..VNET_HDR_LEN].iter().all(|b| *b == 0)), "plain packets: no virtio flags");
        let total: usize = got.iter().map(|g| g.2).sum();
        assert_eq!(total, 4000, "payload preserved");
    }

    #[test]
    fn tcp6_frames_are_cut_too() {
        let b = gso_frame(true, 3000, 0x11); // FIN|ACK
        let f = Frame::parse(&b).unwrap();
        let mut segs = Vec::new();
        segment(&f, 1500, &mut Vec::new(), |s| segs.push(s.to_vec())).unwrap();
        let got: Vec<_> = segs.iter().map(|s| verify(s, true)).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1, 0x10, "FIN only on the last segment");
        assert_eq!(got[2].1, 0x11);
    }

    #[test]
    fn a_large_mtu_takes_the_frame_whole() {
        let b = gso_frame(false, 60000, 0x10);
        let f = Frame::parse(&b).unwrap();
        let mut segs = Vec::new();
        assert_eq!(segment(&f, 65000, &mut Vec::new(), |s| segs.push(s.to_vec())).unwrap(), 1);
        assert_eq!(verify(&segs[0], false).2, 60000);
    }

    #[test]
    fn non_tcp_and_tiny_mtus_are_refused() {
        let mut b = gso_frame(false, 100, 0x10);
        assert_eq!(segment(&Frame::parse(&b).unwrap(), 40, &mut Vec::new(), |_| {}), Err(GsoError::MtuTooSmall));
        b[VNET_HDR_LEN + 14 + 9] = 17; // UDP
        assert_eq!(segment(&Frame::parse(&b).unwrap(), 1500, &mut Vec::new(), |_| {}), Err(GsoError::Unsupported));
    }

    #[test]
    fn a_seeded_checksum_is_completed() {
        // The kernel seeds the TCP checksum field with the pseudo-header sum.
        let mut b = gso_frame(false, 500, 0x18);
        let eth_len = b.len() - VNET_HDR_LEN;
        let l = layout(&b[VNET_HDR_LEN..]).unwrap();
        let seed = finish(pseudo_header(&b[VNET_HDR_LEN..], &l, eth_len - l.l4));
        let at = VNET_HDR_LEN + l.l4 + 16;
        b[at..at + 2].copy_from_slice(&(!seed).to_be_bytes());
        let hdr = VnetHdr::parse(&b).unwrap();
        complete_checksum(&hdr, &mut b[VNET_HDR_LEN..]).unwrap();
        let eth = &b[VNET_HDR_LEN..];
        assert_eq!(finish(sum(&eth[l.l4..], pseudo_header(eth, &l, eth_len - l.l4))), 0);
    }

    #[test]
    fn sums_match_rfc1071() {
        assert_eq!(finish(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0)), !0xddf2);
        assert_eq!(sum(&[0xff], 0), 0xff00, "an odd byte is the high half of a word");
    }
}
