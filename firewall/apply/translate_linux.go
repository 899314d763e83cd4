package apply

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/anvil-metal/anvil/firewall/model"
)

// maxElemBytes bounds the element list of one NEWSETELEM message. The
// list is one netlink attribute, whose length field has 16 bits;
// google/nftables v0.3.0 puts all elements given to one AddSet or
// SetAddElements call into one such attribute and silently truncates its
// length beyond 64 KiB, so the applier splits large sets into several
// messages of the same batch, as nft does.
const maxElemBytes = 60 << 10

// maxComment is nft's limit for a rule comment (NFT_USERDATA_MAXLEN is
// larger, but the userdata length byte and nft itself stop at 128).
const maxComment = 128

// plan is a ruleset translated into google/nftables objects, ready to be
// queued on a Conn. Translating first means a ruleset the applier cannot
// express sends nothing, and the batch's size is known before the socket
// is opened (the socket buffers are sized for it).
type plan struct {
	table  *nftables.Table
	swap   swapPlan // how the table replaces what the kernel holds
	sets   []planSet
	chains []*nftables.Chain
	// counters are the named counter objects, one per counted comment;
	// counterOf maps each object's name back to its comment.
	counters  []*nftables.CounterObj
	counterOf map[string]string
	rules     []*nftables.Rule
	// ruleNames says where each rule comes from ("chain x rules[2]").
	ruleNames []string

	messages int // netlink messages, batch begin/end excluded
	bytes    int // approximate size of the batch
}

type planSet struct {
	set    *nftables.Set
	chunks [][]nftables.SetElement
}

// queue adds the plan's objects to c in nft's order: the chains, the
// sets with their elements, the counter objects, then the rules (the
// table messages are added by encode). It returns what each message
// creates, in order, for error messages.
func (p *plan) queue(c *nftables.Conn) ([]string, error) {
	var what []string
	// Chains before sets: verdict map elements name chains.
	for _, ch := range p.chains {
		c.AddChain(ch)
		what = append(what, "chain "+ch.Name)
	}
	for _, s := range p.sets {
		if err := c.AddSet(s.set, nil); err != nil {
			return nil, fmt.Errorf("set %s: %w", s.set.Name, err)
		}
		what = append(what, "set "+s.set.Name)
		for i, chunk := range s.chunks {
			if err := c.SetAddElements(s.set, chunk); err != nil {
				return nil, fmt.Errorf("set %s elements: %w", s.set.Name, err)
			}
			what = append(what, fmt.Sprintf("elements of set %s (message %d of %d)", s.set.Name, i+1, len(s.chunks)))
		}
	}
	for _, o := range p.counters {
		c.AddObj(o)
		what = append(what, "counter "+o.Name)
	}
	for i, r := range p.rules {
		c.AddRule(r)
		what = append(what, p.ruleNames[i])
	}
	return what, nil
}

// translate builds the plan for rs, its table named sw.target. seeds,
// when not nil, are initial counter values by comment, given to the first
// counter object of that comment.
func translate(rs model.Ruleset, sw swapPlan, seeds map[string]Counter) (*plan, error) {
	if err := checkTableName(rs.Table); err != nil {
		return nil, err
	}
	p := &plan{table: &nftables.Table{Name: sw.target, Family: nftables.TableFamilyINet}, swap: sw}
	p.messages = 3 + 2*len(sw.drop)
	p.bytes = 256

	sets := make(map[string]*model.Set, len(rs.Sets))
	setIDs := make(map[string]uint32, len(rs.Sets))
	for i := range rs.Sets {
		s := &rs.Sets[i]
		if _, dup := sets[s.Name]; dup {
			return nil, fmt.Errorf("%w: set %q defined twice", ErrInvalid, s.Name)
		}
		sets[s.Name] = s
		// IDs tie lookups to sets created in the same batch. Assigning
		// them here keeps google/nftables' package-global ID counter
		// untouched.
		setIDs[s.Name] = uint32(i + 1)
		ps, err := translateSet(p.table, s, setIDs[s.Name])
		if err != nil {
			return nil, err
		}
		p.sets = append(p.sets, ps)
		p.messages += 1 + len(ps.chunks)
		p.bytes += 256 + len(s.Name)
		for _, c := range ps.chunks {
			p.bytes += 64 + len(s.Name)
			for _, e := range c {
				p.bytes += elemWireSize(e)
			}
		}
	}

	chains := make(map[string]*nftables.Chain, len(rs.Chains))
	for _, c := range rs.Chains {
		if _, dup := chains[c.Name]; dup {
			return nil, fmt.Errorf("%w: chain %q defined twice", ErrInvalid, c.Name)
		}
		ch, err := translateChain(p.table, c)
		if err != nil {
			return nil, err
		}
		chains[c.Name] = ch
		p.chains = append(p.chains, ch)
		p.messages++
		p.bytes += 128 + len(c.Name)
	}
	// One counter object per counted comment, started at its seed.
	comments, names := model.CounterNames(rs)
	p.counterOf = make(map[string]string, len(names))
	for i, name := range names {
		if other, dup := p.counterOf[name]; dup {
			return nil, fmt.Errorf("%w: comments %q and %q give the same counter name %q", ErrInvalid, other, comments[i], name)
		}
		p.counterOf[name] = comments[i]
		seed := seeds[comments[i]]
		p.counters = append(p.counters, &nftables.CounterObj{Table: p.table, Name: name, Packets: seed.Packets, Bytes: seed.Bytes})
		p.messages++
		p.bytes += 96 + len(name)
	}
	t := ruleTranslator{sets: sets, ids: setIDs}
	for _, c := range rs.Chains {
		for i, r := range c.Rules {
			exprs, size, err := t.rule(r)
			if err != nil {
				return nil, fmt.Errorf("chain %s rules[%d]: %w", c.Name, i, err)
			}
			nr := &nftables.Rule{Table: p.table, Chain: chains[c.Name], Exprs: exprs}
			if r.Comment != "" {
				if len(r.Comment) > maxComment {
					return nil, fmt.Errorf("%w: chain %s rules[%d]: comment of %d bytes (at most %d)", ErrInvalid, c.Name, i, len(r.Comment), maxComment)
				}
				nr.UserData = userdata.AppendString(nil, userdata.TypeComment, r.Comment)
			}
			p.rules = append(p.rules, nr)
			p.ruleNames = append(p.ruleNames, fmt.Sprintf("chain %s rules[%d]", c.Name, i))
			p.messages++
			p.bytes += 64 + len(c.Name) + size + len(nr.UserData)
		}
	}
	return p, nil
}

func translateSet(t *nftables.Table, s *model.Set, id uint32) (planSet, error) {
	elems, err := elements(*s)
	if err != nil {
		return planSet{}, err
	}
	types := make([]nftables.SetDatatype, len(s.Key))
	for i, k := range s.Key {
		switch k {
		case model.KeyAddr:
			types[i] = nftables.TypeIPAddr
			if s.Family == model.IPv6 {
				types[i] = nftables.TypeIP6Addr
			}
		case model.KeyProto:
			types[i] = nftables.TypeInetProto
		case model.KeyService:
			types[i] = nftables.TypeInetService
		}
	}
	ns := &nftables.Set{
		Table:    t,
		ID:       id,
		Name:     s.Name,
		Interval: s.Interval,
		IsMap:    s.Verdicts,
		KeyType:  types[0],
		// Every key part here is in network byte order (or one byte).
		KeyByteOrder: binaryutil.BigEndian,
	}
	if len(types) > 1 {
		kt, err := nftables.ConcatSetType(types...)
		if err != nil {
			return planSet{}, fmt.Errorf("%w: set %q: %v", ErrInvalid, s.Name, err)
		}
		ns.KeyType = kt
		ns.KeyByteOrder = nil
		// nft sets the concatenation flag (and describes the fields'
		// lengths) only for interval sets, whose pipapo backend needs
		// them; plain concatenations go to a hash set.
		ns.Concatenation = s.Interval
	}
	if s.Verdicts {
		ns.DataType = nftables.TypeVerdict
	}
	out := planSet{set: ns}
	var chunk []nftables.SetElement
	size := 0
	for _, e := range elems {
		se := nftables.SetElement{Key: e.Key, KeyEnd: e.KeyEnd, IntervalEnd: e.End}
		if e.Verdict != nil && !e.End {
			kind := expr.VerdictJump
			if e.Verdict.Kind == model.Goto {
				kind = expr.VerdictGoto
			}
			se.VerdictData = &expr.Verdict{Kind: kind, Chain: e.Verdict.Chain}
		}
		n := elemWireSize(se)
		if size+n > maxElemBytes && len(chunk) > 0 {
			out.chunks = append(out.chunks, chunk)
			chunk, size = nil, 0
		}
		chunk = append(chunk, se)
		size += n
	}
	if len(chunk) > 0 {
		out.chunks = append(out.chunks, chunk)
	}
	return out, nil
}

// elemWireSize is the encoded size of one element in a NEWSETELEM list,
// as google/nftables v0.3.0 encodes it (attribute headers of 4 bytes,
// payloads padded to 4).
func elemWireSize(e nftables.SetElement) int {
	n := 4 // the list element
	if e.IntervalEnd {
		n += 8
	}
	n += 8 + pad4(len(e.Key))
	if len(e.KeyEnd) > 0 {
		n += 8 + pad4(len(e.KeyEnd))
	}
	if v := e.VerdictData; v != nil {
		n += 4 + 4 + 8
		if v.Chain != "" {
			n += 4 + pad4(len(v.Chain)+1)
		}
	}
	return n
}

func translateChain(t *nftables.Table, c model.Chain) (*nftables.Chain, error) {
	ch := &nftables.Chain{Name: c.Name, Table: t}
	if c.Hook == nil {
		return ch, nil
	}
	switch c.Hook.Type {
	case "filter":
		ch.Type = nftables.ChainTypeFilter
	case "nat":
		ch.Type = nftables.ChainTypeNAT
	default:
		return nil, fmt.Errorf("%w: chain %s: hook type %q (want filter or nat)", ErrInvalid, c.Name, c.Hook.Type)
	}
	switch c.Hook.Hook {
	case "prerouting":
		ch.Hooknum = nftables.ChainHookPrerouting
	case "input":
		ch.Hooknum = nftables.ChainHookInput
	case "forward":
		ch.Hooknum = nftables.ChainHookForward
	case "output":
		ch.Hooknum = nftables.ChainHookOutput
	case "postrouting":
		ch.Hooknum = nftables.ChainHookPostrouting
	default:
		return nil, fmt.Errorf("%w: chain %s: hook %q", ErrInvalid, c.Name, c.Hook.Hook)
	}
	ch.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(c.Hook.Priority))
	switch c.Hook.Policy {
	case model.Accept:
		ch.Policy = policyRef(nftables.ChainPolicyAccept)
	case model.Drop:
		ch.Policy = policyRef(nftables.ChainPolicyDrop)
	case model.None: // the kernel's default, accept
	default:
		return nil, fmt.Errorf("%w: chain %s: policy must be accept or drop", ErrInvalid, c.Name)
	}
	return ch, nil
}

func policyRef(p nftables.ChainPolicy) *nftables.ChainPolicy { return &p }

// nfproto values of meta nfproto.
var nfproto = map[model.Family]byte{model.IPv4: unix.NFPROTO_IPV4, model.IPv6: unix.NFPROTO_IPV6}

type ruleTranslator struct {
	sets map[string]*model.Set
	ids  map[string]uint32
}

// rule translates one rule into expressions, in nft's order: the matches
// (meta nfproto, iifname, oifname, ct state, inline matches, lookups), then counter, limit
// and log, then the verdict. It returns an estimate of the encoded size.
func (t *ruleTranslator) rule(r model.Rule) ([]expr.Any, int, error) {
	var x []expr.Any
	size := 0
	add := func(n int, e ...expr.Any) {
		x = append(x, e...)
		size += n * len(e)
	}
	// fam is the family the rule is known to match only: set by an
	// explicit Family or by the first address lookup, whose payload loads
	// need it (in an inet table nft adds this dependency itself).
	fam := r.Family
	switch r.Family {
	case model.FamilyAny:
	case model.IPv4, model.IPv6:
		add(64, nfprotoMatch(r.Family)...)
	default:
		return nil, 0, fmt.Errorf("%w: unknown family %d", ErrInvalid, r.Family)
	}
	for _, m := range []struct {
		key expr.MetaKey
		m   model.IfMatch
	}{{expr.MetaKeyIIFNAME, r.Iif}, {expr.MetaKeyOIFNAME, r.Oif}} {
		if m.m.Name == "" {
			continue
		}
		b, err := ifname(m.m.Name)
		if err != nil {
			return nil, 0, err
		}
		op := expr.CmpOpEq
		if m.m.Negate {
			op = expr.CmpOpNeq
		}
		add(64, &expr.Meta{Key: m.key, Register: reg1}, &expr.Cmp{Op: op, Register: reg1, Data: b})
	}
	if r.CtState != 0 {
		add(80,
			&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(uint32(r.CtState)), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)})
	}
	// needFamily adds the meta nfproto dependency of an address load.
	needFamily := func(f model.Family, what string) error {
		switch fam {
		case model.FamilyAny:
			add(64, nfprotoMatch(f)...)
			fam = f
		case f:
		default:
			return fmt.Errorf("%w: %s of %s addresses in a rule for %s packets", ErrInvalid, what, f, fam)
		}
		return nil
	}
	transport := false // an l4proto match of a protocol with ports came first
	for _, m := range r.Matches {
		mp, err := planMatch(m)
		if err != nil {
			return nil, 0, err
		}
		switch {
		case mp.Meta:
			add(48, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1})
			transport = m.Proto == model.ProtoTCP || m.Proto == model.ProtoUDP || m.Proto == model.ProtoSCTP
		case mp.Transport:
			if !transport {
				return nil, 0, fmt.Errorf("%w: port match without a preceding TCP, UDP or SCTP protocol match", ErrInvalid)
			}
			add(64, &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: mp.Offset, Len: mp.Len})
		default:
			if err := needFamily(mp.Family, "match"); err != nil {
				return nil, 0, err
			}
			add(64, &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: mp.Offset, Len: mp.Len})
		}
		if mp.Mask != nil {
			add(64, &expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: mp.Len, Mask: mp.Mask, Xor: make([]byte, mp.Len)})
		}
		if mp.Eq != nil {
			add(48, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: mp.Eq})
		} else {
			add(96, &expr.Cmp{Op: expr.CmpOpGte, Register: reg1, Data: mp.Lo}, &expr.Cmp{Op: expr.CmpOpLte, Register: reg1, Data: mp.Hi})
		}
	}
	load := func(l model.Lookup) (lookupPlan, error) {
		lp, err := planLookup(t.sets, l)
		if err != nil {
			return lp, err
		}
		if lp.Family != model.FamilyAny {
			if err := needFamily(lp.Family, fmt.Sprintf("lookup in set %q", l.Set)); err != nil {
				return lp, err
			}
		}
		concatInterval := len(l.Fields) > 1 && lp.Set.Interval
		for i, f := range l.Fields {
			reg := lp.Regs[i]
			switch f {
			case model.SrcAddr, model.DstAddr:
				off, n := uint32(12), uint32(4)
				if lp.Family == model.IPv6 {
					off, n = 8, 16
				}
				if f == model.DstAddr {
					off += n
				}
				add(64, &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n})
			case model.L4Proto:
				add(48, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg})
				if concatInterval {
					// nft converts host-order parts of an interval
					// concatenation to network order; for a one-byte
					// value this is a no-op, kept so that the rule is
					// the one nft would have made.
					add(64, &expr.Byteorder{SourceRegister: reg, DestRegister: reg, Op: expr.ByteorderHton, Len: 1, Size: 2})
				}
			case model.DstPort:
				add(64, &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
			}
		}
		return lp, nil
	}
	for _, l := range r.Lookups {
		lp, err := load(l)
		if err != nil {
			return nil, 0, err
		}
		if lp.Set.Verdicts {
			return nil, 0, fmt.Errorf("%w: set %q is a verdict map: look it up with a VMap verdict", ErrInvalid, l.Set)
		}
		add(64+len(l.Set), &expr.Lookup{SourceRegister: lp.Regs[0], SetName: l.Set, SetID: t.ids[l.Set], Invert: l.Negate})
	}
	switch {
	case r.Counter && r.Comment != "":
		name := model.CounterName(r.Comment)
		add(48+len(name), &expr.Objref{Type: int(nftables.ObjTypeCounter), Name: name})
	case r.Counter:
		add(48, &expr.Counter{})
	}
	if r.Log != nil {
		if r.Verdict.Kind != model.None {
			// The limit would ration the verdict as well as the log line.
			return nil, 0, fmt.Errorf("%w: a rule that logs must not have a verdict (the rate limit would apply to it)", ErrInvalid)
		}
		add(96, &expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(r.Log.Rate), Unit: expr.LimitTimeSecond, Burst: r.Log.Burst})
		lg := &expr.Log{}
		if r.Log.Prefix != "" {
			lg.Key = 1 << unix.NFTA_LOG_PREFIX
			lg.Data = []byte(r.Log.Prefix)
		}
		add(48+len(r.Log.Prefix), lg)
	}
	v := r.Verdict
	switch v.Kind {
	case model.None:
	case model.Accept:
		add(48, &expr.Verdict{Kind: expr.VerdictAccept})
	case model.Drop:
		add(48, &expr.Verdict{Kind: expr.VerdictDrop})
	case model.Return:
		add(48, &expr.Verdict{Kind: expr.VerdictReturn})
	case model.Jump, model.Goto:
		if v.Chain == "" {
			return nil, 0, fmt.Errorf("%w: jump or goto without a chain", ErrInvalid)
		}
		kind := expr.VerdictJump
		if v.Kind == model.Goto {
			kind = expr.VerdictGoto
		}
		add(64+len(v.Chain), &expr.Verdict{Kind: kind, Chain: v.Chain})
	case model.VMap:
		if v.Map == nil {
			return nil, 0, fmt.Errorf("%w: vmap verdict without a map", ErrInvalid)
		}
		if v.Map.Negate {
			return nil, 0, fmt.Errorf("%w: vmap lookup in %q cannot be negated", ErrInvalid, v.Map.Set)
		}
		lp, err := load(*v.Map)
		if err != nil {
			return nil, 0, err
		}
		if !lp.Set.Verdicts {
			return nil, 0, fmt.Errorf("%w: vmap lookup in %q, which is not a verdict map", ErrInvalid, v.Map.Set)
		}
		add(64+len(v.Map.Set), &expr.Lookup{SourceRegister: lp.Regs[0], DestRegister: regVerdict, IsDestRegSet: true, SetName: v.Map.Set, SetID: t.ids[v.Map.Set]})
	case model.Masquerade:
		add(32, &expr.Masq{})
	case model.SNAT:
		var data []byte
		var family uint32
		switch {
		case v.Addr.Is4():
			a := v.Addr.As4()
			data, family = a[:], unix.NFPROTO_IPV4
		case v.Addr.Is6() && !v.Addr.Is4In6():
			a := v.Addr.As16()
			data, family = a[:], unix.NFPROTO_IPV6
		default:
			return nil, 0, fmt.Errorf("%w: snat to %v", ErrInvalid, v.Addr)
		}
		add(64, &expr.Immediate{Register: reg1, Data: data}, &expr.NAT{Type: expr.NATTypeSourceNAT, Family: family, RegAddrMin: reg1})
	default:
		return nil, 0, fmt.Errorf("%w: unknown verdict kind %d", ErrInvalid, v.Kind)
	}
	return x, size, nil
}

func nfprotoMatch(f model.Family) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{nfproto[f]}},
	}
}
