//! From SQL text to a resolved plan: parsing with `sqlparser` (after making
//! a bare `FROM data/events.csv` path a quoted identifier), then checking
//! every construct against what the engine supports and resolving names
//! and literal types against the table's schema.

use sqlparser::ast::{
    self as sql, BinaryOperator, DataType, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, LimitClause, ObjectNamePart, OrderByKind, SelectItem,
    SetExpr, Statement, TableFactor, UnaryOperator, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::expr::{AggFunc, CmpOp, Datum, Expr};
use super::QueryError;
use crate::format::Table;
use crate::value::{self, Scalar, ValueType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Json,
    Csv,
}

/// A parsed statement, before names are resolved (the table must be opened
/// first to know its columns).
#[derive(Debug)]
pub struct Parsed {
    pub path: String,
    pub format: Option<OutputFormat>,
    select: Box<sql::Select>,
    order_by: Vec<sql::OrderByExpr>,
    limit: Option<u64>,
    offset: u64,
}

/// One output column.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Column(usize),
    Aggregate(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderKey {
    /// Index into the plan's items (hidden items included).
    pub item: usize,
    pub desc: bool,
    pub nulls_first: bool,
}

/// A resolved query.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub path: String,
    /// Output columns, then hidden ones used only for ORDER BY.
    pub items: Vec<Item>,
    pub names: Vec<String>,
    /// Items shown (the rest are hidden sort keys).
    pub visible: usize,
    pub filter: Option<Expr>,
    pub group_by: Vec<usize>,
    /// Distinct aggregate calls: (function, column).
    pub aggregates: Vec<(AggFunc, Option<usize>)>,
    pub order_by: Vec<OrderKey>,
    pub limit: Option<u64>,
    pub offset: u64,
    pub format: OutputFormat,
}

impl Plan {
    pub fn is_aggregate(&self) -> bool {
        !self.aggregates.is_empty() || !self.group_by.is_empty()
    }

    /// Table columns of the output items (hidden ones included).
    pub fn columns_of_items(&self) -> Vec<usize> {
        let mut cols: Vec<usize> = self.items.iter().filter_map(|i| if let Item::Column(c) = i { Some(*c) } else { None }).collect();
        cols.sort_unstable();
        cols.dedup();
        cols
    }

    /// Every table column the query reads.
    pub fn columns(&self) -> Vec<usize> {
        let mut cols = Vec::new();
        for item in &self.items {
            if let Item::Column(c) = item {
                cols.push(*c);
            }
        }
        cols.extend(&self.group_by);
        cols.extend(self.aggregates.iter().filter_map(|(_, c)| *c));
        if let Some(f) = &self.filter {
            f.columns(&mut cols);
        }
        cols.sort_unstable();
        cols.dedup();
        cols
    }
}

fn unsupported(what: impl std::fmt::Display) -> QueryError {
    QueryError::Unsupported(format!("{what} is not supported; point DuckDB at the mount for it"))
}

// ---------------------------------------------------------------- parsing

/// Parses `sql`. Accepts the seed's bare path (`FROM data/events.csv`),
/// quoted paths (`FROM "a b.csv"`, `FROM 'a.csv'`) and a trailing
/// `FORMAT JSON|CSV`.
pub fn parse(text: &str) -> Result<Parsed, QueryError> {
    let dialect = GenericDialect {};
    let mut tokens = Tokenizer::new(&dialect, text).tokenize().map_err(|e| QueryError::Syntax(e.to_string()))?;
    let format = take_format(&mut tokens)?;
    quote_from_path(&mut tokens)?;
    let rebuilt: String = tokens.iter().map(|t| t.to_string()).collect();
    let mut statements = Parser::new(&dialect).with_tokens(tokens).parse_statements().map_err(|e| QueryError::Syntax(format!("{e} in: {}", rebuilt.trim())))?;
    if statements.len() != 1 {
        return Err(QueryError::Syntax(format!("expected one SELECT statement, found {}", statements.len())));
    }
    let Statement::Query(query) = statements.remove(0) else {
        return Err(unsupported("a statement other than SELECT"));
    };
    lower_query(*query, format)
}

/// Strips a trailing `FORMAT JSON` / `FORMAT CSV` (ClickHouse's convention).
fn take_format(tokens: &mut Vec<Token>) -> Result<Option<OutputFormat>, QueryError> {
    let significant: Vec<usize> = tokens.iter().enumerate().filter(|(_, t)| !matches!(t, Token::Whitespace(_) | Token::SemiColon)).map(|(i, _)| i).collect();
    let n = significant.len();
    if n < 2 {
        return Ok(None);
    }
    let (kw, name) = (&tokens[significant[n - 2]], &tokens[significant[n - 1]]);
    let is_format = matches!(kw, Token::Word(w) if w.value.eq_ignore_ascii_case("format"));
    if !is_format {
        return Ok(None);
    }
    let format = match name {
        Token::Word(w) if w.value.eq_ignore_ascii_case("json") => OutputFormat::Json,
        Token::Word(w) if w.value.eq_ignore_ascii_case("csv") => OutputFormat::Csv,
        other => return Err(QueryError::Syntax(format!("unknown FORMAT {other}; use JSON or CSV"))),
    };
    tokens.truncate(significant[n - 2]);
    Ok(Some(format))
}

/// Rewrites the tokens after the top-level `FROM` that spell a path
/// (`data / events . csv`, a string literal) into one quoted identifier.
fn quote_from_path(tokens: &mut Vec<Token>) -> Result<(), QueryError> {
    let mut depth = 0i32;
    let Some(from) = tokens.iter().position(|t| {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        depth == 0 && matches!(t, Token::Word(w) if w.value.eq_ignore_ascii_case("from") && w.quote_style.is_none())
    }) else {
        return Ok(());
    };
    let mut start = from + 1;
    while matches!(tokens.get(start), Some(Token::Whitespace(_))) {
        start += 1;
    }
    if matches!(tokens.get(start), Some(Token::LParen)) {
        return Ok(()); // a subquery: let the parser see it, to name it
    }
    let mut end = start;
    let mut path = String::new();
    while let Some(t) = tokens.get(end) {
        match t {
            Token::Whitespace(_) | Token::Comma | Token::SemiColon | Token::LParen | Token::RParen => break,
            Token::Word(w) if end > start && w.quote_style.is_none() && is_clause_keyword(&w.value) => break,
            Token::SingleQuotedString(s) if end == start => {
                path.push_str(s);
                end += 1;
                break;
            }
            Token::Word(w) if w.quote_style == Some('"') || w.quote_style == Some('`') => {
                path.push_str(&w.value);
                end += 1;
                if end == start + 1 {
                    break;
                }
            }
            other => {
                path.push_str(&other.to_string());
                end += 1;
            }
        }
    }
    if path.is_empty() {
        return Err(QueryError::Syntax("FROM needs a file path".into()));
    }
    let quoted = Token::make_word(&path, Some('"'));
    tokens.splice(start..end, [quoted]);
    Ok(())
}

fn is_clause_keyword(w: &str) -> bool {
    ["where", "group", "order", "limit", "offset", "having", "join", "inner", "left", "right", "full", "cross", "natural", "union", "as", "window", "qualify"]
        .iter()
        .any(|k| w.eq_ignore_ascii_case(k))
}

fn lower_query(q: sql::Query, format: Option<OutputFormat>) -> Result<Parsed, QueryError> {
    if q.with.is_some() {
        return Err(unsupported("WITH (common table expressions)"));
    }
    if q.fetch.is_some() || !q.locks.is_empty() {
        return Err(unsupported("FETCH / FOR UPDATE"));
    }
    let select = match *q.body {
        SetExpr::Select(s) => s,
        SetExpr::Query(_) => return Err(unsupported("a subquery")),
        SetExpr::SetOperation { op, .. } => return Err(unsupported(format!("{op}"))),
        other => return Err(unsupported(format!("{other}"))),
    };
    let order_by = match q.order_by.map(|o| o.kind) {
        None => Vec::new(),
        Some(OrderByKind::Expressions(e)) => e,
        Some(OrderByKind::All(_)) => return Err(unsupported("ORDER BY ALL")),
    };
    let (limit, offset) = match q.limit_clause {
        None => (None, 0),
        Some(LimitClause::LimitOffset { limit, offset, limit_by }) => {
            if !limit_by.is_empty() {
                return Err(unsupported("LIMIT BY"));
            }
            (limit.map(|e| count(&e, "LIMIT")).transpose()?, offset.map(|o| count(&o.value, "OFFSET")).transpose()?.unwrap_or(0))
        }
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => (Some(count(&limit, "LIMIT")?), count(&offset, "OFFSET")?),
    };
    let path = table_path(&select)?;
    Ok(Parsed { path, format, select, order_by, limit, offset })
}

fn count(e: &sql::Expr, what: &str) -> Result<u64, QueryError> {
    match e {
        sql::Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().map_err(|_| QueryError::Syntax(format!("{what} must be a non-negative integer, not {n}"))),
            other => Err(QueryError::Syntax(format!("{what} must be a number, not {other}"))),
        },
        other => Err(QueryError::Syntax(format!("{what} must be a number, not {other}"))),
    }
}

fn table_path(select: &sql::Select) -> Result<String, QueryError> {
    match select.from.as_slice() {
        [] => Err(QueryError::Syntax("SELECT needs FROM <file>".into())),
        [t] => {
            if !t.joins.is_empty() {
                return Err(unsupported("JOIN"));
            }
            match &t.relation {
                TableFactor::Table { name, args: None, .. } => {
                    let parts: Vec<String> = name
                        .0
                        .iter()
                        .map(|p| match p {
                            ObjectNamePart::Identifier(i) => Ok(i.value.clone()),
                            other => Err(unsupported(format!("table name {other}"))),
                        })
                        .collect::<Result<_, _>>()?;
                    Ok(parts.join("."))
                }
                TableFactor::Derived { .. } => Err(unsupported("a subquery in FROM")),
                TableFactor::Table { .. } => Err(unsupported("a table function")),
                other => Err(unsupported(format!("FROM {other}"))),
            }
        }
        _ => Err(unsupported("more than one table in FROM (a join)")),
    }
}

// ---------------------------------------------------------------- planning

/// Resolves a parsed statement against the table it reads.
pub fn plan(p: Parsed, table: &Table) -> Result<Plan, QueryError> {
    let s = &p.select;
    if s.distinct.is_some() {
        return Err(unsupported("DISTINCT"));
    }
    if s.having.is_some() {
        return Err(unsupported("HAVING"));
    }
    if s.qualify.is_some() || !s.named_window.is_empty() {
        return Err(unsupported("window functions"));
    }
    if s.top.is_some() || s.into.is_some() || !s.lateral_views.is_empty() || s.prewhere.is_some() || !s.sort_by.is_empty() {
        return Err(unsupported("that SELECT clause"));
    }
    let mut b = Builder { table, aggregates: Vec::new() };
    let filter = s.selection.as_ref().map(|e| b.predicate(e)).transpose()?;
    let group_by = match &s.group_by {
        GroupByExpr::Expressions(exprs, modifiers) => {
            if !modifiers.is_empty() {
                return Err(unsupported("GROUP BY modifiers"));
            }
            exprs.iter().map(|e| b.column_of(e, "GROUP BY")).collect::<Result<Vec<_>, _>>()?
        }
        GroupByExpr::All(_) => return Err(unsupported("GROUP BY ALL")),
    };
    let mut items = Vec::new();
    let mut names = Vec::new();
    for item in &s.projection {
        match item {
            SelectItem::Wildcard(_) => {
                for (c, def) in table.columns.iter().enumerate() {
                    items.push(Item::Column(c));
                    names.push(def.name.clone());
                }
            }
            SelectItem::UnnamedExpr(e) => {
                items.push(b.item(e)?);
                names.push(display_name(e, table));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                items.push(b.item(expr)?);
                names.push(alias.value.clone());
            }
            other => return Err(unsupported(format!("select item {other}"))),
        }
    }
    let visible = items.len();
    let aggregate = !b.aggregates.is_empty() || !group_by.is_empty();
    if aggregate {
        for (item, name) in items.iter().zip(&names) {
            if let Item::Column(c) = item {
                if !group_by.contains(c) {
                    return Err(QueryError::Plan(format!("column {name} must appear in GROUP BY or be inside an aggregate")));
                }
            }
        }
    }
    let mut order_by = Vec::new();
    for o in &p.order_by {
        if o.with_fill.is_some() {
            return Err(unsupported("WITH FILL"));
        }
        let desc = match &o.options.sort {
            None | Some(sql::OrderBySort::Asc) => false,
            Some(sql::OrderBySort::Desc) => true,
            Some(other) => return Err(unsupported(format!("ORDER BY {other:?}"))),
        };
        let item = b.order_item(&o.expr, &mut items, &mut names, visible, aggregate, &group_by)?;
        // NULLs sort last unless asked otherwise (DuckDB's default).
        order_by.push(OrderKey { item, desc, nulls_first: o.options.nulls_first.unwrap_or(false) });
    }
    Ok(Plan {
        path: p.path,
        items,
        names,
        visible,
        filter,
        group_by,
        aggregates: b.aggregates,
        order_by,
        limit: p.limit,
        offset: p.offset,
        format: p.format.unwrap_or(OutputFormat::Json),
    })
}

/// The name an unaliased select item gets.
fn display_name(e: &sql::Expr, table: &Table) -> String {
    match e {
        sql::Expr::Identifier(i) => find_column(table, &i.value, i.quote_style.is_some()).map_or(i.value.clone(), |c| table.columns[c].name.clone()),
        other => other.to_string(),
    }
}

fn find_column(table: &Table, name: &str, exact: bool) -> Option<usize> {
    table
        .columns
        .iter()
        .position(|c| c.name == name)
        .or_else(|| if exact { None } else { table.columns.iter().position(|c| c.name.eq_ignore_ascii_case(name)) })
}

/// The terms of a chain of `op` (`a OR b OR c`, parsed as `(a OR b) OR c`,
/// parentheses looked through), in order. Iterative: a chain of thousands
/// of terms costs no stack.
fn chain<'e>(e: &'e sql::Expr, op: &BinaryOperator) -> Vec<&'e sql::Expr> {
    let mut terms = Vec::new();
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        match x {
            sql::Expr::BinaryOp { left, op: o, right } if o == op => {
                stack.push(right);
                stack.push(left);
            }
            sql::Expr::Nested(inner) if matches!(&**inner, sql::Expr::BinaryOp { op: o, .. } if o == op) => stack.push(inner),
            other => terms.push(other),
        }
    }
    terms
}

struct Builder<'a> {
    table: &'a Table,
    aggregates: Vec<(AggFunc, Option<usize>)>,
}

impl Builder<'_> {
    fn column(&self, ident: &sql::Ident) -> Result<usize, QueryError> {
        find_column(self.table, &ident.value, ident.quote_style.is_some()).ok_or_else(|| {
            let known: Vec<&str> = self.table.columns.iter().map(|c| c.name.as_str()).collect();
            QueryError::Plan(format!("no column named {} (columns: {})", ident.value, known.join(", ")))
        })
    }

    fn column_of(&self, e: &sql::Expr, what: &str) -> Result<usize, QueryError> {
        match e {
            sql::Expr::Identifier(i) => self.column(i),
            sql::Expr::Nested(inner) => self.column_of(inner, what),
            other => Err(unsupported(format!("{what} by an expression ({other})"))),
        }
    }

    fn item(&mut self, e: &sql::Expr) -> Result<Item, QueryError> {
        match e {
            sql::Expr::Identifier(i) => Ok(Item::Column(self.column(i)?)),
            sql::Expr::Nested(inner) => self.item(inner),
            sql::Expr::Function(f) => Ok(Item::Aggregate(self.aggregate(f)?)),
            other => Err(unsupported(format!("the expression {other} in SELECT (only columns, * and COUNT/SUM/MIN/MAX/AVG)"))),
        }
    }

    /// Registers an aggregate call and returns its index.
    fn aggregate(&mut self, f: &sql::Function) -> Result<usize, QueryError> {
        if f.over.is_some() {
            return Err(unsupported("window functions (OVER)"));
        }
        if f.filter.is_some() || !f.within_group.is_empty() {
            return Err(unsupported("FILTER / WITHIN GROUP"));
        }
        let name = f.name.to_string().to_ascii_lowercase();
        let FunctionArguments::List(list) = &f.args else {
            return Err(QueryError::Plan(format!("{name} needs an argument")));
        };
        if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
            return Err(unsupported(format!("{name}(DISTINCT ...) and argument clauses")));
        }
        let arg = match list.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] => None,
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => Some(self.column_of(e, &format!("{name}()"))?),
            _ => return Err(unsupported(format!("{name} with these arguments"))),
        };
        let func = match (name.as_str(), arg) {
            ("count", None) => AggFunc::CountStar,
            ("count", Some(_)) => AggFunc::Count,
            ("sum", Some(_)) => AggFunc::Sum,
            ("min", Some(_)) => AggFunc::Min,
            ("max", Some(_)) => AggFunc::Max,
            ("avg", Some(_)) => AggFunc::Avg,
            (_, None) => return Err(QueryError::Plan(format!("{name}(*) is not a thing; only COUNT(*)"))),
            (other, _) => return Err(unsupported(format!("the function {other}"))),
        };
        if let Some(c) = arg {
            let t = self.table.columns[c].logical_type;
            if matches!(func, AggFunc::Sum | AggFunc::Avg) && !(t.is_numeric() || t == ValueType::Null) {
                return Err(QueryError::Plan(format!("{name}({}) needs a numeric column; it is {}", self.table.columns[c].name, t.name())));
            }
        }
        let key = (func, arg);
        Ok(self.aggregates.iter().position(|a| *a == key).unwrap_or_else(|| {
            self.aggregates.push(key);
            self.aggregates.len() - 1
        }))
    }

    fn order_item(
        &mut self,
        e: &sql::Expr,
        items: &mut Vec<Item>,
        names: &mut Vec<String>,
        visible: usize,
        aggregate: bool,
        group_by: &[usize],
    ) -> Result<usize, QueryError> {
        // A position: ORDER BY 2.
        if let sql::Expr::Value(v) = e {
            if let Value::Number(n, _) = &v.value {
                let pos: usize = n.parse().map_err(|_| QueryError::Plan(format!("bad ORDER BY position {n}")))?;
                return (1..=visible)
                    .contains(&pos)
                    .then(|| pos - 1)
                    .ok_or_else(|| QueryError::Plan(format!("ORDER BY position {pos} is not in the select list")));
            }
        }
        // An output name (alias or column name).
        if let sql::Expr::Identifier(i) = e {
            if let Some(pos) = names[..visible].iter().position(|n| *n == i.value || (i.quote_style.is_none() && n.eq_ignore_ascii_case(&i.value))) {
                return Ok(pos);
            }
        }
        let item = self.item(e)?;
        if let Some(pos) = items.iter().position(|x| *x == item) {
            return Ok(pos);
        }
        if aggregate {
            if let Item::Column(c) = item {
                if !group_by.contains(&c) {
                    return Err(QueryError::Plan("ORDER BY column must be in GROUP BY or inside an aggregate".into()));
                }
            }
        }
        items.push(item);
        names.push(e.to_string());
        Ok(items.len() - 1)
    }

    /// A WHERE predicate.
    fn predicate(&mut self, e: &sql::Expr) -> Result<Expr, QueryError> {
        Ok(match e {
            sql::Expr::Nested(inner) => self.predicate(inner)?,
            sql::Expr::BinaryOp { op: op @ (BinaryOperator::And | BinaryOperator::Or), .. } => {
                let terms = chain(e, op).into_iter().map(|t| self.predicate(t)).collect::<Result<Vec<_>, _>>()?;
                if *op == BinaryOperator::And {
                    Expr::And(terms)
                } else {
                    Expr::Or(terms)
                }
            }
            sql::Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Eq => CmpOp::Eq,
                    BinaryOperator::NotEq => CmpOp::NotEq,
                    BinaryOperator::Lt => CmpOp::Lt,
                    BinaryOperator::LtEq => CmpOp::LtEq,
                    BinaryOperator::Gt => CmpOp::Gt,
                    BinaryOperator::GtEq => CmpOp::GtEq,
                    other => return Err(unsupported(format!("the operator {other}"))),
                };
                let (l, r) = self.operands(left, right)?;
                Expr::Cmp(op, Box::new(l), Box::new(r))
            }
            sql::Expr::UnaryOp { op: UnaryOperator::Not, expr } => Expr::Not(Box::new(self.predicate(expr)?)),
            sql::Expr::IsNull(inner) => Expr::IsNull { expr: Box::new(self.operand(inner, None)?), negated: false },
            sql::Expr::IsNotNull(inner) => Expr::IsNull { expr: Box::new(self.operand(inner, None)?), negated: true },
            sql::Expr::Between { expr, negated, low, high } => {
                let target = self.operand(expr, None)?;
                let t = self.type_of(&target);
                Expr::Between { expr: Box::new(target), low: Box::new(self.operand(low, t)?), high: Box::new(self.operand(high, t)?), negated: *negated }
            }
            sql::Expr::InList { expr, list, negated } => {
                let target = self.operand(expr, None)?;
                let t = self.type_of(&target);
                let list = list.iter().map(|x| self.operand(x, t)).collect::<Result<_, _>>()?;
                Expr::InList { expr: Box::new(target), list, negated: *negated }
            }
            sql::Expr::Like { negated, any: false, expr, pattern, escape_char: None } => {
                let target = self.operand(expr, None)?;
                let pattern = match self.operand(pattern, Some(ValueType::String))? {
                    Expr::Literal(Some(Scalar::Str(p))) => p,
                    other => return Err(unsupported(format!("LIKE with a non-literal pattern ({other:?})"))),
                };
                Expr::Like { expr: Box::new(target), pattern, negated: *negated }
            }
            sql::Expr::InSubquery { .. } | sql::Expr::Exists { .. } | sql::Expr::Subquery(_) => return Err(unsupported("a subquery")),
            sql::Expr::Function(f) => return Err(unsupported(format!("the function {} in WHERE", f.name))),
            sql::Expr::Value(_) | sql::Expr::Identifier(_) => self.operand(e, Some(ValueType::Bool))?,
            other => return Err(unsupported(format!("the expression {other}"))),
        })
    }

    /// Both sides of a comparison; a literal takes the type of a column on
    /// the other side.
    fn operands(&mut self, left: &sql::Expr, right: &sql::Expr) -> Result<(Expr, Expr), QueryError> {
        let l = self.operand(left, None)?;
        let t = self.type_of(&l);
        let r = self.operand(right, t)?;
        if matches!(l, Expr::Literal(_)) {
            if let Some(t) = self.type_of(&r) {
                let l = self.operand(left, Some(t))?;
                return Ok((l, r));
            }
        }
        Ok((l, r))
    }

    fn type_of(&self, e: &Expr) -> Option<ValueType> {
        match e {
            Expr::Column(c) => Some(self.table.columns[*c].logical_type),
            _ => None,
        }
    }

    /// A column or a literal (converted to `want`, the type of the column it
    /// meets, when given).
    fn operand(&mut self, e: &sql::Expr, want: Option<ValueType>) -> Result<Expr, QueryError> {
        match e {
            sql::Expr::Identifier(i) => Ok(Expr::Column(self.column(i)?)),
            sql::Expr::Nested(inner) => self.operand(inner, want),
            sql::Expr::Value(v) => Ok(Expr::Literal(coerce(literal(&v.value)?, want)?)),
            sql::Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match self.operand(expr, None)? {
                Expr::Literal(Some(s)) => Ok(Expr::Literal(coerce(Some(negate(s)?), want)?)),
                _ => Err(unsupported(format!("the expression {e}"))),
            },
            sql::Expr::UnaryOp { op: UnaryOperator::Plus, expr } => self.operand(expr, want),
            sql::Expr::TypedString(ts) => {
                let text = match &ts.value.value {
                    Value::SingleQuotedString(s) => s.clone(),
                    other => return Err(QueryError::Syntax(format!("bad typed literal {other}"))),
                };
                let ty = match &ts.data_type {
                    DataType::Timestamp(..) | DataType::Datetime(_) | DataType::TimestampNtz(_) => ValueType::Timestamp,
                    DataType::Date => ValueType::Date,
                    other => return Err(unsupported(format!("{other} literals"))),
                };
                let v = value::parse_lenient(ty, text.as_bytes()).ok_or_else(|| QueryError::Plan(format!("'{text}' is not a {}", ty.name())))?;
                Ok(Expr::Literal(coerce(Some(v), want)?))
            }
            sql::Expr::Function(_) => Err(unsupported(format!("the function call {e} here"))),
            other => Err(unsupported(format!("the expression {other}"))),
        }
    }
}

fn literal(v: &Value) -> Result<Datum, QueryError> {
    Ok(match v {
        Value::Number(n, _) => Some(value::lenient_number(n.as_bytes()).ok_or_else(|| QueryError::Syntax(format!("bad number {n}")))?),
        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(Scalar::Str(s.as_bytes().to_vec())),
        Value::Boolean(b) => Some(Scalar::Bool(*b)),
        Value::Null => None,
        other => return Err(unsupported(format!("the literal {other}"))),
    })
}

fn negate(s: Scalar) -> Result<Scalar, QueryError> {
    Ok(match s {
        Scalar::Int(v) => Scalar::Int(v.checked_neg().ok_or_else(|| QueryError::Syntax("integer overflow".into()))?),
        Scalar::Decimal(d) => Scalar::Decimal(value::Decimal { mantissa: -d.mantissa, scale: d.scale }),
        Scalar::Float(f) => Scalar::Float(-f),
        other => return Err(QueryError::Plan(format!("cannot negate {other}"))),
    })
}

/// Converts a literal to the type of the column it is compared with:
/// `'2013-12-31T00:00:00Z'` against a timestamp column is an instant,
/// `'5'` against a number column is 5, a number against a text column is
/// its text.
fn coerce(d: Datum, want: Option<ValueType>) -> Result<Datum, QueryError> {
    let (Some(v), Some(t)) = (&d, want) else { return Ok(d) };
    let converted = match (v, t) {
        (Scalar::Str(s), ValueType::Int | ValueType::Decimal) => value::lenient_number(s),
        (Scalar::Str(s), ValueType::Timestamp | ValueType::Date | ValueType::Bool) => value::parse_lenient(t, s),
        (Scalar::Timestamp(x), ValueType::Date) => Some(Scalar::Timestamp(*x)),
        (Scalar::Str(_), ValueType::String | ValueType::Null) => return Ok(d),
        (other, ValueType::String) => Some(Scalar::Str(other.to_string().into_bytes())),
        _ => return Ok(d),
    };
    match converted {
        Some(c) => Ok(Some(c)),
        None => Err(QueryError::Plan(format!("{v} cannot be compared with a {} column", t.name()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_quoted_and_string_paths_parse() {
        for q in [
            "SELECT id, user FROM data/events.csv WHERE score BETWEEN 10 AND 12 LIMIT 100",
            "SELECT id FROM \"data/events.csv\" WHERE score > 1",
            "SELECT id FROM 'data/events.csv'",
            "select * from data/my-file_2.v1.csv limit 3 offset 2",
        ] {
            let p = parse(q).unwrap();
            assert!(p.path.starts_with("data/"), "{q} -> {}", p.path);
        }
        assert_eq!(parse("SELECT * FROM data/my-file_2.v1.csv").unwrap().path, "data/my-file_2.v1.csv");
        assert_eq!(parse("SELECT * FROM t FORMAT CSV").unwrap().format, Some(OutputFormat::Csv));
    }

    #[test]
    fn unsupported_constructs_are_named() {
        for (q, word) in [
            ("SELECT * FROM a JOIN b ON a.x = b.x", "JOIN"),
            ("SELECT * FROM (SELECT 1)", "subquery"),
            ("WITH c AS (SELECT 1) SELECT * FROM c", "WITH"),
            ("SELECT * FROM a UNION SELECT * FROM b", "UNION"),
        ] {
            let err = parse(q).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(word), "{q}: {err}");
        }
    }
}
