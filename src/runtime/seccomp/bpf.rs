//! A tiny classic-BPF assembler for seccomp filters: instructions with symbolic jump
//! targets, resolved once the program is complete. Conditional jumps only ever skip 0
//! or 1 instruction (the next one is an unconditional `ja`, whose offset is 32 bits), so
//! programs of any size assemble without running out of the 8-bit jump range.

use libc::sock_filter;

// Classic BPF opcodes (linux/bpf_common.h).
const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_ALU: u16 = 0x04;
const BPF_AND: u16 = 0x50;
const BPF_K: u16 = 0x00;
const BPF_JMP: u16 = 0x05;
const BPF_JA: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_JGT: u16 = 0x20;
const BPF_JGE: u16 = 0x30;
const BPF_RET: u16 = 0x06;

/// A jump target, placed with [`Asm::bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// A comparison of the accumulator with a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `A == k`
    Eq,
    /// `A > k` (unsigned)
    Gt,
    /// `A >= k` (unsigned)
    Ge,
}

enum Insn {
    Plain(sock_filter),
    Jump(Label),
}

/// A program under construction.
#[derive(Default)]
pub struct Asm {
    code: Vec<Insn>,
    labels: Vec<Option<usize>>,
}

/// The program cannot be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AsmError {
    /// Longer than the kernel accepts (BPF_MAXINSNS).
    #[error("the seccomp filter has {0} instructions, more than the kernel's limit of 4096")]
    TooLong(usize),
    /// A jump to a label never placed, or placed before the jump (a bug of the
    /// generator: classic BPF only jumps forward).
    #[error("internal error of the seccomp compiler: bad jump at instruction {0}")]
    BadJump(usize),
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

impl Asm {
    /// A new label, not yet placed.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Places `l` at the next instruction.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.code.len());
    }

    /// `A = seccomp_data[offset]` (32 bits).
    pub fn load(&mut self, offset: u32) {
        self.code
            .push(Insn::Plain(stmt(BPF_LD | BPF_W | BPF_ABS, offset)));
    }

    /// `A &= k`.
    pub fn and(&mut self, k: u32) {
        self.code
            .push(Insn::Plain(stmt(BPF_ALU | BPF_AND | BPF_K, k)));
    }

    /// `return k`.
    pub fn ret(&mut self, k: u32) {
        self.code.push(Insn::Plain(stmt(BPF_RET | BPF_K, k)));
    }

    /// Unconditional jump.
    pub fn jump(&mut self, to: Label) {
        self.code.push(Insn::Jump(to));
    }

    /// Jumps to `to` when `A cmp k` holds, falls through otherwise.
    pub fn jump_if(&mut self, cmp: Cmp, k: u32, to: Label) {
        // true: skip nothing and take the `ja`; false: skip the `ja`.
        self.cond(cmp, k, 0, 1);
        self.jump(to);
    }

    /// Jumps to `to` when `A cmp k` does not hold, falls through otherwise.
    pub fn jump_unless(&mut self, cmp: Cmp, k: u32, to: Label) {
        self.cond(cmp, k, 1, 0);
        self.jump(to);
    }

    fn cond(&mut self, cmp: Cmp, k: u32, jt: u8, jf: u8) {
        let op = match cmp {
            Cmp::Eq => BPF_JEQ,
            Cmp::Gt => BPF_JGT,
            Cmp::Ge => BPF_JGE,
        };
        self.code.push(Insn::Plain(sock_filter {
            code: BPF_JMP | op | BPF_K,
            jt,
            jf,
            k,
        }));
    }

    /// Resolves the labels.
    pub fn finish(self) -> Result<Vec<sock_filter>, AsmError> {
        if self.code.len() > 4096 {
            return Err(AsmError::TooLong(self.code.len()));
        }
        let labels = self.labels;
        self.code
            .into_iter()
            .enumerate()
            .map(|(pc, insn)| match insn {
                Insn::Plain(f) => Ok(f),
                Insn::Jump(l) => labels
                    .get(l.0)
                    .copied()
                    .flatten()
                    .and_then(|target| target.checked_sub(pc + 1))
                    .map(|off| stmt(BPF_JMP | BPF_JA, off as u32))
                    .ok_or(AsmError::BadJump(pc)),
            })
            .collect()
    }
}
