{#-
    Data tests configured with `where: "__new_rows__"` (every test: dbt_project.yml) check the
    rows of their model with an `ingested_at` after FRAUD_PLATFORM_TESTS_INGESTED_AFTER (an
    instant; per topic: `tests_ingested_after` below) when that variable is set, and the whole
    model otherwise. The transform asset sets it on the runs that kafka_arrivals_sensor requests
    (to the newest `ingested_at` silver held before the run), so a micro-batch tests what it
    added instead of the whole history; scheduled, UI and CI runs (tests/dbt) test everything,
    as do models without `ingested_at` (unless `rebuilt_rows`, below).
    A `unique` test checks every row whose key a new row has: a new copy of an old key is a
    duplicate too. Those rows are found through `narrowed_to_new_values`, so that the scan skips
    the older row groups and files instead of reading the whole model. A model without
    `ingested_at` (gold) can name the rows an incremental build rewrites in the test's
    `meta: {rebuilt_rows: <predicate>}`, `__after_<stamped table>__` standing for that table's
    instant (`tests_ingested_after` below): the test checks those (for `unique`, the predicate
    must depend on the key only, so that both copies of a duplicate are in or out together).
    Overrides dbt's `get_where_subquery` (what generic tests select from); other
    `where` configs keep dbt's behaviour. Read at execution only: an environment variable read
    while parsing would be recorded for partial parsing.
-#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where == '__new_rows__' -%}
        {%- set after = tests_ingested_after(relation) -%}
        {%- set columns = adapter.get_columns_in_relation(relation) if after else [] -%}
        {%- if 'ingested_at' in columns | map(attribute='name') | map('lower') | list -%}
            {%- set new_rows = "ingested_at > cast('" ~ after ~ "' as timestamptz)" -%}
            {%- set test = model.get('test_metadata') or {} -%}
            {%- if test.get('name') == 'unique' -%}
                {%- set key = test.get('kwargs', {}).get('column_name') -%}
                {%- set narrowed = narrowed_to_new_values(
                    relation, (config.get('meta') or {}).get('narrowed_by', key), new_rows
                ) -%}
                {%- do return(
                    '(select * from ' ~ relation ~ ' where ' ~ narrowed ~ ' and (' ~ key
                    ~ ') in (select ' ~ key ~ ' from ' ~ relation ~ ' where ' ~ new_rows
                    ~ ')) dbt_subquery'
                ) -%}
            {%- endif -%}
            {%- do return('(select * from ' ~ relation ~ ' where ' ~ new_rows ~ ') dbt_subquery') -%}
        {%- endif -%}
        {%- set rebuilt = (config.get('meta') or {}).get('rebuilt_rows') if after else none -%}
        {%- if rebuilt -%}
            {%- set by_table = tests_ingested_after_by_table() -%}
            {%- set predicate = namespace(sql=rebuilt) -%}
            {%- for table in ['fct_transactions', 'fct_account_events', 'fct_labels'] -%}
                {%- set predicate.sql = predicate.sql | replace(
                    '__after_' ~ table ~ '__',
                    "cast('" ~ by_table.get(table, after) ~ "' as timestamptz)"
                ) -%}
            {%- endfor -%}
            {%- do return(
                '(select * from ' ~ relation ~ ' where ' ~ predicate.sql ~ ') dbt_subquery'
            ) -%}
        {%- endif -%}
        {%- do return(relation) -%}
    {%- endif -%}
    {%- do return(adapter.dispatch('get_where_subquery', 'dbt')(relation)) -%}
{%- endmacro %}


{#-
    The instant after which a row of `relation` is new: FRAUD_PLATFORM_TESTS_INGESTED_AFTER_BY_TABLE
    (JSON, set with the other by the transform asset) holds each stamped silver table's newest
    `ingested_at` before the run, which also scopes the staging view of its topic; any other relation takes the earliest of them
    (FRAUD_PLATFORM_TESTS_INGESTED_AFTER). Per table, because a quiet topic's older instant would
    make every row the other topics ingested since then "new". Empty: test whole models.
-#}
{% macro tests_ingested_after(relation) -%}
    {%- set after = env_var('FRAUD_PLATFORM_TESTS_INGESTED_AFTER', '') if execute else '' -%}
    {%- set fed = {
        'stg_bronze__transactions': 'fct_transactions',
        'stg_bronze__account_events': 'fct_account_events',
        'stg_bronze__labels': 'fct_labels',
    }.get(relation.identifier, relation.identifier) -%}
    {{ return(tests_ingested_after_by_table().get(fed, after) if after else '') }}
{%- endmacro %}


{% macro tests_ingested_after_by_table() -%}
    {%- set by_table = env_var('FRAUD_PLATFORM_TESTS_INGESTED_AFTER_BY_TABLE', '') if execute else '' -%}
    {{ return(fromjson(by_table) if by_table else {}) }}
{%- endmacro %}


{#-
    A predicate on `column` (an expression) that every row sharing a key with a new row meets:
    its value lies between the smallest and largest value among the new rows, both written as
    constants so that DuckDB prunes with them (row-group zone maps of a table, the Delta files'
    statistics of bronze) before the key lookup. A unique test's column is its key (equal keys,
    equal values); `meta: {narrowed_by: <column>}` names another the key determines (a Kafka
    record's offset for its `partition:offset` key, a string no range of which prunes). Prunes
    well when the column grows with ingestion (offsets, time-ordered ids), reads what the lookup
    read before otherwise; false when there is no new row.
-#}
{% macro narrowed_to_new_values(relation, column, new_rows) -%}
    {%- set found = run_query(
        'select cast(min(' ~ column ~ ') as varchar), cast(max(' ~ column ~ ') as varchar), '
        ~ 'typeof(min(' ~ column ~ ')) from ' ~ relation ~ ' where ' ~ new_rows
    ) -%}
    {%- set lowest, highest, type = found.rows[0][0], found.rows[0][1], found.rows[0][2] -%}
    {%- if lowest is none -%}{{ return('false') }}{%- endif -%}
    {{ return(
        '(' ~ column ~ ') between cast(' ~ quoted_literal(lowest) ~ ' as ' ~ type ~ ') and cast('
        ~ quoted_literal(highest) ~ ' as ' ~ type ~ ')'
    ) }}
{%- endmacro %}


{% macro quoted_literal(text) -%}
    {{ return("'" ~ (text | replace("'", "''")) ~ "'") }}
{%- endmacro %}
