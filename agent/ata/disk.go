package ata

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Transport executes one ATA PASS-THROUGH command and returns what the
// SCSI layer reported (Check decides whether it succeeded); err is only a
// failure to issue it.
type Transport interface {
	Exec(ctx context.Context, cdb CDB, dir Direction, data []byte, timeout time.Duration) (Reply, error)
}

// Disk is a SATA drive reached through a Transport.
type Disk struct {
	T Transport
	// Name identifies the drive in errors (its device path).
	Name string
	// Tick is how often progress is reported during ERASE UNIT (default 5 s).
	Tick time.Duration
}

// commandTimeout bounds the short commands.
const commandTimeout = 30 * time.Second

func (d *Disk) exec(ctx context.Context, cdb CDB, dir Direction, data []byte, timeout time.Duration) error {
	r, err := d.T.Exec(ctx, cdb, dir, data, timeout)
	if err != nil {
		return fmt.Errorf("ATA command %#02x (%s): %w", cdb[14], CommandName(cdb[14]), err)
	}
	_, err = Check(cdb[14], len(data), r)
	return err
}

// Identify reads and parses IDENTIFY DEVICE.
func (d *Disk) Identify(ctx context.Context) (Identify, error) {
	buf := make([]byte, 512)
	if err := d.exec(ctx, IdentifyDevice(), FromDevice, buf, commandTimeout); err != nil {
		return Identify{}, err
	}
	return ParseIdentify(buf)
}

// label names the drive in errors.
func (d *Disk) label(id Identify) string {
	return fmt.Sprintf("drive %s (model %q, serial %q)", d.Name, id.Model, id.Serial)
}

// Result says what SecureErase did. None of its text holds a password.
type Result struct {
	Method string
	// Password says which password the erase set (never the password).
	Password string
	// Recovered says how a password left on the drive was removed first;
	// empty when security was disabled.
	Recovered string
	Duration  time.Duration
}

func (r Result) String() string {
	s := r.Method + " (" + r.Password
	if r.Recovered != "" {
		s += "; " + r.Recovered
	}
	return s + ")"
}

// SecureErase erases the drive with the password policy k: a password
// left by an earlier erase is removed first (Plan's Recover step), then
// SECURITY SET PASSWORD (k.Erase as the user password), ERASE PREPARE and
// ERASE UNIT (enhanced when supported); IDENTIFY then checks that
// security is disabled again, as a completed erase leaves it. A failure
// after the password was set tries SECURITY DISABLE PASSWORD; if that
// fails too the drive keeps k.Erase, which the next Wipe knows.
func (d *Disk) SecureErase(ctx context.Context, k Known, progress func(done, total uint64)) (Result, error) {
	if k.Erase == (Password{}) {
		return Result{}, fmt.Errorf("drive %s: %w", d.Name, ErrNoPassword)
	}
	start := time.Now()
	id, err := d.Identify(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("drive %s: %w", d.Name, err)
	}
	steps, err := Plan(id)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", d.label(id), err)
	}
	recovered, err := d.recover(ctx, id, steps.Recover, k)
	if err != nil {
		return Result{}, err
	}
	set := PasswordBlock(false, false, k.Erase)
	if err := d.exec(ctx, SecuritySetPassword(), ToDevice, set[:], commandTimeout); err != nil {
		err = fmt.Errorf("%s: SECURITY SET PASSWORD: %w", d.label(id), err)
		if errors.Is(err, ErrAborted) {
			return Result{}, err // the drive refused it: no password set
		}
		// A timeout or a transport error: the drive may have taken the
		// password, and would lock at its next power cycle. Take it off.
		return Result{}, d.cleanup(ctx, k, err)
	}
	method := "ata-security-erase"
	if steps.Enhanced {
		method += "-enhanced"
	}
	if err := d.erase(ctx, k.Erase, steps, progress); err != nil {
		return Result{}, d.cleanup(ctx, k, fmt.Errorf("%s: %w", d.label(id), err))
	}
	after, err := d.Identify(ctx)
	if err != nil {
		return Result{}, d.cleanup(ctx, k, fmt.Errorf("%s: IDENTIFY after erase: %w", d.label(id), err))
	}
	if after.Security.Enabled || after.Security.Locked {
		return Result{}, d.cleanup(ctx, k, fmt.Errorf("%s: security is still enabled after SECURITY ERASE UNIT: the erase did not complete", d.label(id)))
	}
	return Result{Method: method, Password: k.Describe(), Recovered: recovered, Duration: time.Since(start)}, nil
}

// Unlock brings a drive left locked or with security enabled (by an
// interrupted erase) back to security disabled without erasing it:
// SECURITY UNLOCK (when locked) and SECURITY DISABLE PASSWORD with the
// known passwords. It says what it did; a drive already disabled is left
// alone.
func (d *Disk) Unlock(ctx context.Context, k Known) (string, error) {
	id, err := d.Identify(ctx)
	if err != nil {
		return "", fmt.Errorf("drive %s: %w", d.Name, err)
	}
	rec, err := PlanRecovery(id.Security)
	if err != nil {
		return "", fmt.Errorf("%s: %w", d.label(id), err)
	}
	what, err := d.recover(ctx, id, rec, k)
	if err != nil || rec == RecoverNone {
		return "security already disabled", err
	}
	after, err := d.Identify(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: IDENTIFY after unlock: %w", d.label(id), err)
	}
	if after.Security.Enabled || after.Security.Locked {
		return "", fmt.Errorf("%s: security is still enabled after SECURITY DISABLE PASSWORD was accepted", d.label(id))
	}
	return what, nil
}

// recover runs the Recovery: each known password in turn, the
// instruction's first; an ABRT means the drive refused that password. Any
// other failure stops at once (it would cost attempts for nothing).
func (d *Disk) recover(ctx context.Context, id Identify, rec Recovery, k Known) (string, error) {
	if rec == RecoverNone {
		return "", nil
	}
	state := "enabled"
	if rec == RecoverUnlock {
		state = "locked"
	}
	var refused []string
	for _, c := range k.Candidates() {
		blk := PasswordBlock(false, false, c.PW)
		if rec == RecoverUnlock {
			err := d.exec(ctx, SecurityUnlock(), ToDevice, blk[:], commandTimeout)
			if errors.Is(err, ErrAborted) {
				refused = append(refused, c.Name)
				continue
			}
			if err != nil {
				return "", fmt.Errorf("%s: SECURITY UNLOCK with %s: %w", d.label(id), c.Name, err)
			}
		}
		err := d.exec(ctx, SecurityDisablePassword(), ToDevice, blk[:], commandTimeout)
		if rec == RecoverDisable && errors.Is(err, ErrAborted) {
			refused = append(refused, c.Name)
			continue
		}
		if err != nil {
			return "", fmt.Errorf("%s: SECURITY DISABLE PASSWORD with %s: %w", d.label(id), c.Name, err)
		}
		return fmt.Sprintf("security was %s (an interrupted erase leaves it so): opened with %s and disabled", state, c.Name), nil
	}
	counter := "each refusal counts against the drive's attempt limit (5 on most drives), after which (IDENTIFY word 128 bit 4) only a power cycle allows more attempts"
	if after, err := d.Identify(ctx); err != nil {
		counter += fmt.Sprintf("; IDENTIFY afterwards failed: %v", err)
	} else if after.Security.CountExpired {
		counter = "the attempt counter is now exhausted (IDENTIFY word 128 bit 4): power-cycle the machine before another attempt"
	}
	return "", fmt.Errorf("%s: %w: security is %s and the drive refused %s; %s", d.label(id), ErrUnknownPassword, state, strings.Join(refused, " and "), counter)
}

func (d *Disk) erase(ctx context.Context, pw Password, st Steps, progress func(done, total uint64)) error {
	if err := d.exec(ctx, SecurityErasePrepare(), NoData, nil, commandTimeout); err != nil {
		return fmt.Errorf("SECURITY ERASE PREPARE: %w", err)
	}
	est := uint64(st.Timeout.Seconds())
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := d.Tick
		if tick <= 0 {
			tick = 5 * time.Second
		}
		t := time.NewTicker(tick)
		defer t.Stop()
		begin := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if progress != nil {
					progress(min(uint64(time.Since(begin).Seconds()), est), est)
				}
			}
		}
	}()
	unit := PasswordBlock(false, st.Enhanced, pw)
	err := d.exec(ctx, SecurityEraseUnit(), ToDevice, unit[:], st.Timeout)
	close(stop)
	<-done
	if err != nil {
		return fmt.Errorf("SECURITY ERASE UNIT: %w", err)
	}
	if progress != nil {
		progress(est, est)
	}
	return nil
}

// cleanup disables the erase password after a failure.
func (d *Disk) cleanup(ctx context.Context, k Known, cause error) error {
	blk := PasswordBlock(false, false, k.Erase)
	if err := d.exec(context.WithoutCancel(ctx), SecurityDisablePassword(), ToDevice, blk[:], commandTimeout); err != nil {
		return errors.Join(cause, fmt.Errorf("SECURITY DISABLE PASSWORD (the drive may stay locked with %s; the next wipe with the same policy unlocks it): %w", strings.TrimPrefix(k.Describe(), "user password: "), err))
	}
	return cause
}
